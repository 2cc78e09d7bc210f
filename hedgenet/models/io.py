"""Save and load trained models as one file: constructor arguments + weights (+ provenance)."""

from __future__ import annotations

from pathlib import Path

import torch


def build_hedgenet(**kwargs):
    from hedgenet.models.hedgenet import HedgeNet

    return HedgeNet(**kwargs)


def build_mace(**kwargs):
    from hedgenet.models.baselines.mace import MACEModel

    return MACEModel(**kwargs)


def build_deeph_e3(**kwargs):
    from hedgenet.models.baselines.deeph_e3 import DeepHE3

    return DeepHE3(**kwargs)


BUILDERS = {"hedgenet": build_hedgenet, "mace": build_mace, "deeph_e3": build_deeph_e3}
"""Model kind (``model.name`` of the config, saved in ``model.pt``) -> constructor."""
MODEL_FORMAT = 2
"""Bumped when a saved architecture changes incompatibly (2: H head + two-center S head)."""


def save_model(path: str | Path, kind: str, init_kwargs: dict, model: torch.nn.Module, extra: dict | None = None) -> Path:
    """Write ``{kind, init_kwargs, dtype, state_dict, extra}`` atomically to ``path`` (``.pt``)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    torch.save(
        {"kind": kind, "format": MODEL_FORMAT, "init_kwargs": init_kwargs, "dtype": dtype,
         "state_dict": model.state_dict(), "extra": extra or {}},
        tmp,
    )
    tmp.replace(path)
    return path


def load_model(path: str | Path, map_location="cpu") -> torch.nn.Module:
    """Rebuild a model saved by :func:`save_model` (eval mode, its saved dtype)."""
    data = torch.load(path, map_location=map_location, weights_only=False)
    if data.get("kind") not in BUILDERS:
        raise ValueError(f"{path}: unknown model kind {data.get('kind')!r}; valid: {sorted(BUILDERS)}")
    kwargs = {"dtype": data.get("dtype", "float64"), **data["init_kwargs"]}
    model = BUILDERS[data["kind"]](**kwargs)
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as err:
        raise ValueError(
            f"{path} (model format {data.get('format', 'unrecorded')}) does not fit this hedgenet's architecture "
            f"(format {MODEL_FORMAT}): {str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}. "
            "Fix: retrain it with hedgenet-train on the same data."
        ) from None
    model.eval()
    model.extra = data.get("extra", {})
    return model
