"""Checks of a pipeline request before any stage runs: keys, the Monte Carlo settings, every stage's
supercell against its block cutoff, and a given model's fit to the material. Each failure is a
:class:`~hedgenet.config.ConfigError` naming the fix; nothing has run when it is raised."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from hedgenet.config import ConfigError, check_config, check_temperatures


def check_pipeline_config(cfg: DictConfig, stages) -> None:
    check_config(cfg, "pipeline")
    for s in stages:  # each stage's composed config against that stage's schema (keys, types)
        if s.config is not None:
            check_config(s.config, s.kind, where=f"stage {s.name} (overrides.{s.kind} or overrides.common)",
                         allow_missing=True)
    fv = next((s for s in stages if s.kind == "fermi_velocity"), None)
    if fv is not None:
        from hedgenet.physics.fermi_velocity import renormalization_settings

        c = fv.config
        try:
            check_temperatures(c["fermi_velocity"]["temperatures_K"], "fermi_velocity.temperatures_K")
            renormalization_settings(OmegaConf.create(c)).check()  # the stage's config is a plain dict
        except ValueError as err:  # ConfigError included
            raise ConfigError(f"stage fermi_velocity: {err} (overrides.fermi_velocity)") from None
    check_stage_cells(cfg, stages)
    if cfg.model_path is not None:
        from hedgenet.calculators import check_calculator_for, make_calculator
        from hedgenet.config import resolved_dict
        from hedgenet.structures import build_structure

        try:
            calc = make_calculator("model", None, cfg.model_path)
            check_calculator_for(calc, build_structure(cfg.material.builder, **resolved_dict(cfg.material.params)),
                                 need_blocks=any(s.kind in ("epi", "fermi_velocity") for s in stages))
        except ValueError as err:
            raise ConfigError(f"model_path={cfg.model_path}: {err}") from None



# (stage kind, config section holding its supercell) for the stages that run the reference on a supercell
SUPERCELL_KEYS = {"label": "dataset", "phonons": "phonons", "epi": "epi", "fermi_velocity": "fermi_velocity"}
RELAX_TOLERANCE = 1.03  # the relaxed lattice constant may exceed the builder's default by a few %


def check_stage_cells(cfg: DictConfig, stages) -> None:
    """Refuse, before anything runs, a stage whose supercell is narrower than twice its reference's block
    cutoff (minimum-image splitting of the Γ-point blocks; the stage would fail after the relaxation). Checked
    on the builder's unrelaxed cell, with :data:`RELAX_TOLERANCE`; the stage itself checks the relaxed cell."""
    import numpy as np
    from ase import Atoms

    from hedgenet.config import resolved_dict
    from hedgenet.orbitals.blocks import CellTooSmallError, check_cell_for_cutoff
    from hedgenet.structures import build_structure
    from hedgenet.structures.supercell import in_plane_width, supercell_matrix

    unit = build_structure(cfg.material.builder, **resolved_dict(cfg.material.params))
    for s in stages:
        section = SUPERCELL_KEYS.get(s.kind)
        if section is None or s.config is None or "reference" not in s.config:
            continue
        sc = s.config[section].get("supercell")
        cutoff = float(s.config["reference"].get("block_cutoff") or 0.0)
        if sc is None or cutoff <= 0:
            continue
        cell = supercell_matrix(sc) @ unit.cell.array
        try:  # the stage's own rule, on the unrelaxed cell widened by what the relaxation may add
            check_cell_for_cutoff(Atoms(cell=cell * RELAX_TOLERANCE, pbc=unit.pbc), cutoff)
        except CellTooSmallError:
            width = in_plane_width(cell)
            raise ConfigError(
                f"stage {s.name}: the {'×'.join(map(str, sc))} supercell of {cfg.material.name} is about "
                f"{width:.2f} Å wide, too narrow for reference.block_cutoff={cutoff:g} Å (blocks are split "
                f"by minimum image: width > 2 × cutoff). Fix: overrides.{s.kind}.{section}.supercell larger, or "
                f"overrides.{s.kind}.reference.block_cutoff ≤ {np.floor(width / 2 * 10) / 10:g}. Nothing has run."
            ) from None
