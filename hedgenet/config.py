"""Config helpers shared by the Hydra entry points: where the configs live and strict validation.

Hydra's struct mode already rejects a misspelt key given on the command line and an unknown group option
(naming the valid choices). :func:`check_keys` extends that to keys written inside YAML files (a user's own
material or experiment file), naming the bad key, a close match and the valid keys.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config is inconsistent or has keys hedgenet does not know."""


def config_dir() -> str:
    """Absolute path of the config tree: ``conf/`` beside the package in a checkout, else the copy
    installed inside the package (``hedgenet/conf``) by a non-editable install."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "conf"):
        if (candidate / "label.yaml").exists():
            return str(candidate)
    raise FileNotFoundError(
        f"hedgenet's configs were not found next to {here} (looked for conf/label.yaml). "
        "Fix: reinstall hedgenet (`pip install -e .` from the repository)."
    )


def check_keys(section, allowed, where: str) -> None:
    """Raise :class:`ConfigError` if ``section`` has keys outside ``allowed``."""
    keys = list(section.keys()) if section is not None else []
    allowed = list(allowed)
    bad = [k for k in keys if k not in allowed]
    if bad:
        parts = []
        for k in bad:
            hint = difflib.get_close_matches(str(k), allowed, n=1)
            parts.append(f"{where}.{k}" + (f" (did you mean {where}.{hint[0]}?)" if hint else ""))
        raise ConfigError(f"unknown config key {', '.join(parts)}; valid keys of {where}: {sorted(allowed)}")


MATERIAL_KEYS = ("name", "builder", "params", "relax", "label_supercell", "description")
RELAX_STEP_KEYS = ("parameter", "builder", "supercell", "bounds")


def check_material(material: DictConfig) -> None:
    from hedgenet.structures import BUILDERS, builder_parameters

    check_keys(material, MATERIAL_KEYS, "material")
    for key in ("name", "builder"):
        if key not in material:
            raise ConfigError(f"material config lacks {key!r}")
    builder = material.builder
    if builder not in BUILDERS:
        hint = difflib.get_close_matches(builder, BUILDERS, n=1)
        raise ConfigError(
            f"material.builder={builder!r} is unknown; valid: {sorted(BUILDERS)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    steps = list(material.get("relax") or [])
    accepted = set(builder_parameters(builder))
    for i, step in enumerate(steps):
        check_keys(step, RELAX_STEP_KEYS, f"material.relax[{i}]")
        accepted |= set(builder_parameters(step.builder))
    check_keys(material.get("params") or {}, sorted(accepted), "material.params")
    relaxed = {s.parameter for s in steps}
    main = set(builder_parameters(builder))
    for p in relaxed:
        if p not in main:
            raise ConfigError(
                f"material.relax relaxes {p!r}, which builder {builder!r} does not take; valid: {sorted(main)}"
            )


def resolved_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
