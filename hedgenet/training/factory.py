"""Model construction from the ``model`` and ``relations`` config groups: one place that turns a config and
the data's layout, block cutoff, elements and layer count into a model and its (saved) constructor arguments."""

from __future__ import annotations

from omegaconf import DictConfig

from hedgenet.config import ConfigError, resolved_dict


def model_kwargs(cfg: DictConfig, layout, block_cutoff: float, elements, n_layers: int, dtype: str,
                 solver_methods=None) -> dict:
    """Constructor arguments of the model family ``cfg.model.name`` (JSON-able: saved with the weights).

    * ``hedgenet``: relations and their cutoffs, the blocks' layout and cutoff unless ``task=forces``;
    * ``mace``: one cutoff ``r_max`` = ``relations.r_single``, else max(r_intra, r_inter) (Å): the same
      neighbourhood as HedgeNet's homogeneous ablation ``relations=single``;
    * ``deeph_e3``: the blocks' layout and cutoff (its graph is the block graph; relations are unused).

    ``solver_methods`` (the datasets' reference methods; None: unknown) decide ``relations.dispersion_learnable:
    auto``: the tail is held at its initial values where they are the reference's own (GFN1-xTB on carbon), learned
    elsewhere; ``false`` where they are not is refused with the fix.
    """
    common = {
        "elements": [int(z) for z in elements],
        "size": resolved_dict(cfg.model.size),
        "task": cfg.task,
        "num_basis": int(cfg.model.num_basis),
        "radial_hidden": int(cfg.model.radial_hidden),
        "dtype": dtype,  # built in this precision: a float32 model cast to float64 is equivariant only to ~1e-7
    }
    blocks = {"layout": layout.to_json() if cfg.task != "forces" else None,
              "block_cutoff": block_cutoff if cfg.task != "forces" else None}
    rel = cfg.relations
    if cfg.model.name == "mace":
        r_max = float(rel.r_single) if rel.r_single is not None else max(float(rel.r_intra), float(rel.r_inter))
        return {**common, "r_max": r_max}
    if cfg.model.name == "deeph_e3":
        return {**common, **blocks}
    return {
        **common, **blocks,
        "relations": rel.name,
        "r_intra": float(rel.r_intra),
        "r_inter": float(rel.r_inter),
        "r_single": None if rel.r_single is None else float(rel.r_single),
        "registry_widths": [float(w) for w in rel.get("registry_widths_A", [])],
        "dispersion_cutoff": None if rel.get("dispersion_cutoff_A") is None else float(rel.dispersion_cutoff_A),
        "interlayer_pair_functions": int(rel.get("interlayer_pair_functions", 0)),
        "dispersion_learnable": dispersion_learnable(rel, elements, solver_methods),
        "n_layers": n_layers,
    }


def dispersion_learnable(rel: DictConfig, elements, solver_methods) -> bool:
    """``relations.dispersion_learnable`` (auto | true | false) resolved for the data (see :func:`model_kwargs`)."""
    from hedgenet.models.dispersion import held_tail_mismatch

    value = rel.get("dispersion_learnable", "auto")
    if value not in ("auto", True, False):
        raise ConfigError(f"relations.dispersion_learnable={value!r}; valid: auto, true, false")
    if rel.get("dispersion_cutoff_A") is None:
        return True  # no tail: nothing to hold
    why = held_tail_mismatch(elements, solver_methods if solver_methods is not None else [None])
    if value is False and why is not None:
        raise ConfigError(f"relations.dispersion_learnable=false holds the dispersion tail at GFN1-xTB's own values for "
                          f"carbon, which are not this data's: {why}. Fix: relations.dispersion_learnable=auto (it "
                          "then learns them) or relations.dispersion_cutoff_A=null (no tail).")
    return why is not None if value == "auto" else bool(value)


def build_model(cfg: DictConfig, layout, block_cutoff: float, elements, n_layers: int, dtype: str = "float64",
                solver_methods=None):
    """The model of ``cfg.model`` and its constructor arguments (saved with the weights)."""
    from hedgenet.models.io import BUILDERS

    if cfg.model.name not in BUILDERS:
        raise ConfigError(f"model.name={cfg.model.name!r} unknown; valid: {sorted(BUILDERS)}")
    kwargs = model_kwargs(cfg, layout, block_cutoff, elements, n_layers, dtype, solver_methods)
    try:
        model = BUILDERS[cfg.model.name](**kwargs)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    except ImportError as err:  # model=mace without mace-torch: the message names the extra that brings it
        raise ConfigError(str(err)) from err
    return model, kwargs
