"""Save and load trained models as one file: constructor arguments + weights (+ provenance)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hedgenet.models.dispersion import upgrade_state_dict


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


class ModelFileError(ValueError):
    """A file given as a model cannot be loaded: missing, empty, truncated, not a hedgenet model, or holding
    Python objects (which a model file never does, and which are never unpickled). The message names the file
    and the fix."""


FIX = ("Fix: point model_path at the model.pt a hedgenet-train run wrote (its run directory), or retrain with "
       "hedgenet-train")


def _plain(obj):
    """``obj`` as plain Python data (dicts, lists, str, int, float, bool, None): what ``weights_only`` loading
    accepts. numpy scalars and arrays become Python numbers and lists."""
    import json

    def default(o):
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    return json.loads(json.dumps(obj, default=default))


def save_model(path: str | Path, kind: str, init_kwargs: dict, model: torch.nn.Module, extra: dict | None = None) -> Path:
    """Write ``{kind, format, init_kwargs, dtype, state_dict, extra}`` atomically to ``path`` (``.pt``): tensors
    and plain data only, so :func:`load_model` reads it with ``torch.load(weights_only=True)``. The temporary
    file has this process's id in its name and is removed if the write fails (a full disk leaves nothing)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    import io

    buf = io.BytesIO()  # serialised in memory, written with plain I/O: a full disk is a clean OSError(ENOSPC)
    torch.save(
        {"kind": kind, "format": MODEL_FORMAT, "init_kwargs": _plain(init_kwargs), "dtype": dtype,
         "state_dict": model.state_dict(), "extra": _plain(extra or {})},
        buf,
    )
    try:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_REQUIRED = ("kind", "init_kwargs", "state_dict")


def _numpy_scalar_globals() -> list:
    """numpy scalar reconstruction (and dtypes): models written before model files held plain data only
    carry numpy floats in their metrics; these classes rebuild a number and nothing else."""
    import numpy as np

    out = [np.dtype, type(np.dtype(np.float64)), type(np.dtype(np.float32)), type(np.dtype(np.int64))]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            import importlib

            out.append(importlib.import_module(mod).scalar)
            break
        except (ImportError, AttributeError):
            continue
    return out


def read_model_file(path: str | Path, map_location="cpu") -> dict:
    """The checked contents of a model file (``torch.load(weights_only=True)``: tensors and plain data only,
    never arbitrary Python objects). :class:`ModelFileError` naming the file and the fix for a missing, empty,
    truncated, crafted or foreign file."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist. {FIX}.")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"model file {path} is empty (0 bytes: a write that was cut short). {FIX}.")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # zip (torch.save) or a legacy pickle
        raise ModelFileError(f"{path} is not a model file (not a PyTorch file: it starts with {magic!r}; {size} "
                             f"bytes). {FIX}.")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "Weights only load failed" in str(err) or "Unsupported global" in str(err):
            why = [ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
            raise ModelFileError(
                f"{path} is not a hedgenet model file: it asks to run Python code or build Python objects on "
                f"loading ({why[0] if why else first}), which a model file never does; it was not loaded. "
                f"Do not load it with torch.load(weights_only=False). {FIX}."
            ) from None
        raise ModelFileError(f"{path} is not a model file (not a PyTorch file: {first}; {size} bytes). {FIX}.") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError,
            TypeError, IndexError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(
            f"{path} cannot be read as a model file: it is truncated or corrupt ({type(err).__name__}: {first}; "
            f"{size} bytes). {FIX}."
        ) from None
    if not isinstance(data, dict) or any(k not in data for k in _REQUIRED):
        what = type(data).__name__
        if isinstance(data, dict):
            if "state_dict" in data and ("pytorch-lightning_version" in data or "epoch" in data):
                raise ModelFileError(
                    f"{path} is a Lightning training checkpoint, not a model file. Fix: use model.pt of the same "
                    "run directory (or resume training from the checkpoint with train.resume=...)."
                )
            what = f"a dict with keys {sorted(map(str, data))[:8]}"
        raise ModelFileError(f"{path} is a PyTorch file but not a hedgenet model file (it holds {what}; a model "
                             f"file holds {list(_REQUIRED)}). {FIX}.")
    if data["kind"] not in BUILDERS:
        raise ModelFileError(f"{path}: unknown model kind {data['kind']!r}; valid: {sorted(BUILDERS)}. {FIX}.")
    if not isinstance(data["init_kwargs"], dict) or not isinstance(data["state_dict"], dict):
        raise ModelFileError(f"{path} is damaged: its init_kwargs or state_dict is not a mapping. {FIX}.")
    bad = [k for k, v in data["state_dict"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(f"{path} is damaged: state_dict entries {bad[:3]} are not tensors. {FIX}.")
    nonfinite = [k for k, v in data["state_dict"].items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise ModelFileError(
            f"{path} holds non-finite weights (NaN/inf in {len(nonfinite)} tensors, e.g. {nonfinite[0]}): the training "
            "that wrote it diverged. Fix: retrain with hedgenet-train (a smaller train.optimizer.lr)."
        )
    return data


def _current_state(data: dict) -> dict:
    """The file's state dict in the current layout: files written before the H gauge (H itself) and before the
    dispersion tail's log scale upgraded."""
    state = dict(data["state_dict"])
    state.setdefault("hamiltonian_shift_eV", torch.zeros(()))
    upgrade_state_dict(state)
    return state


def load_weights(model: torch.nn.Module, kind: str, init_kwargs: dict, path: str | Path) -> None:
    """Copy the weights of the model file ``path`` into ``model`` (built as ``kind`` with ``init_kwargs``): the
    start of a fine-tuning run. The file's model must be the same architecture — kind and constructor arguments
    equal, the dtype aside (a float32 model fine-tunes in float64 and back) — else :class:`ModelFileError` names
    the arguments that differ."""
    data = read_model_file(path)
    if data["kind"] != kind:
        raise ModelFileError(f"{path} holds a {data['kind']!r} model, this run builds {kind!r}. Fix: set model= to "
                             f"the file's family, or start from a {kind} model file.")
    mine, theirs = _plain(init_kwargs), data["init_kwargs"]
    differ = sorted(k for k in set(mine) | set(theirs) if k != "dtype" and mine.get(k) != theirs.get(k))
    if differ:
        shown = "; ".join(f"{k}: file {theirs.get(k)!r}, run {mine.get(k)!r}" for k in differ[:4])
        raise ModelFileError(
            f"{path} is not the architecture this run builds ({len(differ)} constructor arguments differ: {shown}). "
            "Fix: train with the model, relations and dataset settings of the run that wrote it (its "
            "resolved_config.yaml), or drop train.init_from to start from random weights."
        )
    model.load_state_dict(_current_state(data))  # copied into the model's own dtype


def load_model(path: str | Path, map_location="cpu") -> torch.nn.Module:
    """Rebuild a model saved by :func:`save_model` (eval mode, its saved dtype). The file is read with
    ``torch.load(weights_only=True)`` and checked (:func:`read_model_file`); any problem is one
    :class:`ModelFileError` (a ``ValueError``) naming the file and the fix."""
    data = read_model_file(path, map_location)
    kwargs = {"dtype": data.get("dtype", "float64"), **data["init_kwargs"]}
    try:
        model = BUILDERS[data["kind"]](**kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise ModelFileError(
            f"{path} (model format {data.get('format', 'unrecorded')}) cannot be rebuilt by this hedgenet "
            f"(format {MODEL_FORMAT}): {err}. Fix: retrain it with hedgenet-train on the same data."
        ) from None
    try:
        model.load_state_dict(_current_state(data))
    except RuntimeError as err:
        raise ModelFileError(
            f"{path} (model format {data.get('format', 'unrecorded')}) does not fit this hedgenet's architecture "
            f"(format {MODEL_FORMAT}): {str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}. "
            "Fix: retrain it with hedgenet-train on the same data."
        ) from None
    model.eval()
    model.extra = data.get("extra", {})
    return model
