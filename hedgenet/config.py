"""Config helpers shared by the Hydra entry points: where the configs live and strict validation.

Every CLI merges its composed config into its schema (:mod:`hedgenet.config_schema`) with
:func:`check_config` before anything runs: a misspelt key anywhere (also inside a YAML file a user wrote, e.g.
a material) or a value of the wrong type is a :class:`ConfigError` naming the key, a close match and the fix.
Hydra refuses an unknown group option itself (naming the valid choices); a misspelt key given on the
command line without ``+`` gets the same hint (:func:`hedgenet.cli.run_hydra_app`).

Resolver ``${hedgenet.above_zero:<list>}``: the values of a temperature list above 0 K (the thermal samples
of ``hedgenet-label`` take the temperatures of v_F(T) without its 0 K point).
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# train.yaml's search path for the `tuned` group ($HEDGENET_ROOT/sweeps) exists only after a first hedgenet-sweep;
# until then Hydra warns about it on every command that composes train.yaml
warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=.*sweeps is not available",
                        category=UserWarning)


class ConfigError(ValueError):
    """A config is inconsistent or has keys hedgenet does not know."""


def _above_zero(values):
    return [v for v in values if float(v) > 0]


def _file_stem(path):
    from hedgenet.structures.from_file import file_stem

    return file_stem(path)


def _label_supercell(path, block_cutoff_A):
    from hedgenet.structures.from_file import label_supercell_for

    return label_supercell_for(path, block_cutoff_A)


for _name, _fn in (("hedgenet.above_zero", _above_zero), ("hedgenet.file_stem", _file_stem),
                   ("hedgenet.label_supercell", _label_supercell)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


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


def unknown_key_message(key: str, valid, where: str | None = None) -> str:
    """``unknown config key <key> (did you mean <close match>?); valid keys of <section>: [...]. Fix: ...``
    for a dotted ``key`` whose last part is not among ``valid`` (the keys of its section)."""
    section, _, leaf = key.rpartition(".")
    valid = sorted(str(v) for v in valid)
    hint = difflib.get_close_matches(leaf, valid, n=1)
    near = f" (did you mean {section + '.' if section else ''}{hint[0]}?)" if hint else ""
    fix = f"write {section + '.' if section else ''}{hint[0]}" if hint else "remove it"
    return (f"unknown config key {key}{near}{f' in {where}' if where else ''}; valid keys of "
            f"{section or '<root>'}: {valid}. Fix: {fix} (on the command line or in the YAML file that sets it)")


def check_keys(section, allowed, where: str) -> None:
    """Raise :class:`ConfigError` if ``section`` has keys outside ``allowed`` (for sections whose valid keys
    depend on another value, e.g. a material's builder ``params``: the schemas cover the rest)."""
    keys = list(section.keys()) if section is not None else []
    bad = [k for k in keys if k not in allowed]
    if bad:
        raise ConfigError(unknown_key_message(f"{where}.{bad[0]}", allowed))


def _locate(node, key: str, prefix: str = "") -> str | None:
    """Dotted path (list items as ``[i]``) of the first mapping inside ``node`` holding ``key``."""
    if isinstance(node, dict):
        if key in node:
            return f"{prefix}.{key}".lstrip(".")
        items = [(f"{prefix}.{k}", v) for k, v in node.items()]
    elif isinstance(node, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
    else:
        return None
    for p, v in items:
        found = _locate(v, key, p)
        if found is not None:
            return found
    return None


def check_config(cfg, schema: str | type, where: str | None = None, allow_missing: bool = False) -> DictConfig:
    """``cfg`` merged into its schema (a name of :data:`hedgenet.config_schema.SCHEMAS` or a dataclass):
    the typed config, or a :class:`ConfigError` naming the first unknown key (with a close match and the
    valid keys of its section), value of the wrong type or missing value. ``where`` (e.g. ``stage
    phonons_model (overrides.phonons)``) says where the config came from. Interpolations stay unresolved."""
    import dataclasses

    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    from hedgenet.config_schema import SCHEMAS, open_paths

    schema_cls = SCHEMAS[schema] if isinstance(schema, str) else schema
    base = OmegaConf.structured(schema_cls)
    for path in open_paths(schema_cls):
        OmegaConf.set_struct(OmegaConf.select(base, path), False)
    data = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    try:
        merged = OmegaConf.merge(base, data)
    except OmegaConfBaseException as err:
        key = str(err.full_key or err.key or "")
        if isinstance(err, ConfigKeyError) and err.key is not None:
            leaf = str(err.key)
            if "." not in key and err.object_type is not schema_cls:  # inside a list item: find it
                plain = OmegaConf.to_container(data, resolve=False) if isinstance(data, DictConfig) else data
                key = _locate(plain, leaf) or key
            valid = ([f.name for f in dataclasses.fields(err.object_type)]
                     if err.object_type is not None and dataclasses.is_dataclass(err.object_type) else [])
            raise ConfigError(unknown_key_message(key, valid, where)) from None
        if isinstance(err, ValidationError):
            value = OmegaConf.select(data, key, default=None, throw_on_missing=False) if key else None
            types = {f.name: f.type for f in dataclasses.fields(err.object_type)} if (
                err.object_type is not None and dataclasses.is_dataclass(err.object_type)) else {}
            wanted = types.get(str(err.key))
            wanted = getattr(wanted, "__name__", None) or (str(wanted) if wanted else None)
            raise ConfigError(
                f"config key {key}={value!r} has the wrong type{f' in {where}' if where else ''}: "
                f"{str(err.msg).splitlines()[0]}. Fix: give {key} "
                + (f"a value of type {wanted}" if wanted else "a value of the type hedgenet/config_schema.py declares for it")
            ) from None
        raise ConfigError(f"config key {key}{f' in {where}' if where else ''}: {str(err.msg).splitlines()[0]}") from None
    if not allow_missing:
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"config keys {missing} have no value{f' in {where}' if where else ''}. "
                              f"Fix: set them (e.g. {missing[0]}=...) or in the YAML file of that section")
    for key in SUPERCELL_KEYS:  # before any expensive step: supercell=[0,0] is refused here
        try:
            value = OmegaConf.select(merged, key, default=None, throw_on_resolution_failure=False,
                                     throw_on_missing=False)
        except Exception:  # noqa: BLE001 — an interpolation resolved later: checked where it is used
            value = None
        if value is not None and not isinstance(value, str):
            check_supercell(value, key, where)
    return merged


SUPERCELL_KEYS = ("dataset.supercell", "phonons.supercell", "epi.supercell", "fermi_velocity.supercell",
                  "material.label_supercell", "dataset.force_constants_supercell", "epi.force_constants_supercell",
                  "fermi_velocity.force_constants_supercell")


def check_supercell(value, key: str, where: str | None = None) -> list[int]:
    """A supercell is 2 or 3 whole numbers ≥ 1 (repetitions of the unit cell along a1, a2[, a3])."""
    try:
        values = list(value)
        ok = len(values) in (2, 3) and all(float(v) == int(v) and int(v) >= 1 for v in values)
    except (TypeError, ValueError):
        values, ok = value, False
    if not ok:
        raise ConfigError(f"{key}={values}{f' in {where}' if where else ''}: a supercell is 2 (or 3) whole numbers "
                          f"≥ 1, the repetitions of the unit cell along a1, a2. Fix: e.g. {key}=[5,5]")
    return [int(v) for v in values]


def check_temperatures(temperatures, key: str, allow_empty: bool = False) -> list[float]:
    """The one check of a temperature list (K): finite and ≥ 0, non-empty unless ``allow_empty``."""
    import math

    values = [float(t) for t in (temperatures or [])]
    if not values and not allow_empty:
        raise ConfigError(f"{key}: the temperature list is empty: give at least one temperature (K). "
                          "Fix: set temperatures.K (shared by the thermal samples and v_F(T))")
    if any(not math.isfinite(t) or t < 0 for t in values):
        also = "" if key == "temperatures.K" else " (or temperatures.K, shared by the thermal samples and v_F(T))"
        raise ConfigError(f"{key}: temperatures must be finite and ≥ 0 K, got {values}. Fix: set {key}{also}")
    return values


def check_material(material: DictConfig) -> None:
    """What the material's schema cannot say, because it depends on the builder: the builder exists, its
    ``params`` and those of the relaxation steps' builders, and every relaxed parameter is one of the builder's.
    The material's keys and types are checked with the rest of the config by :func:`check_config` first."""
    from hedgenet.structures import BUILDERS, builder_parameters

    builder = material.builder
    if builder not in BUILDERS:
        hint = difflib.get_close_matches(builder, BUILDERS, n=1)
        raise ConfigError(
            f"material.builder={builder!r} is unknown; valid: {sorted(BUILDERS)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    steps = list(material.get("relax") or [])
    accepted = set(builder_parameters(builder))
    for step in steps:
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


from hedgenet import config_schema as _config_schema  # noqa: F401  (stores the schemas in Hydra's ConfigStore)
