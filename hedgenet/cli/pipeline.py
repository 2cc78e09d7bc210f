"""``hedgenet-pipeline``: material → labelled data → trained HedgeNet → phonons, couplings, v_F(T) → report.

    hedgenet-pipeline                                   # AB bilayer graphene with GFN1-xTB (the README's job)
    hedgenet-pipeline overrides.fermi_velocity.sampler=sdm
    hedgenet-pipeline experiment=twisted_bilayer_graphene
    hedgenet-pipeline dry_run=true

Stages run as their own console scripts in cached directories (:mod:`hedgenet.pipeline`); this run's
directory gets report.md, report.html, headline.json, stages.json and the resolved config.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hedgenet.cli import run_stage
from hedgenet.config import ConfigError, check_keys, config_dir

ROOT_KEYS = ("paths", "material", "reference", "task_name", "stages", "reference_stages", "model_path", "dry_run",
             "min_free_disk_GB", "overrides")


def check_pipeline_config(cfg: DictConfig, stages) -> None:
    check_keys(cfg, ROOT_KEYS, "<root>")
    check_keys(cfg.overrides, ("common", "label", "train", "phonons", "epi", "fermi_velocity"), "overrides")
    fv = next((s for s in stages if s.kind == "fermi_velocity"), None)
    if fv is not None:
        from hedgenet.physics.renormalization import RenormalizationSettings

        c = fv.config
        try:
            RenormalizationSettings(temperatures_K=tuple(c["fermi_velocity"]["temperatures_K"]),
                                    sampler=c["sampler"]["name"], n_samples=int(c["sampler"]["n_samples"]),
                                    orders=tuple(c["fermi_velocity"]["orders"])).check()
        except ValueError as err:
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


def run_pipeline(cfg: DictConfig, run_dir: Path) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from tqdm import tqdm

    from hedgenet.pipeline import PipelineError, assign_hashes, load_outputs, plan, run_stage_process
    from hedgenet.report.pipeline import write_report

    choices = HydraConfig.get().runtime.choices
    stages = plan(cfg, {"material": choices["material"], "reference": choices["reference"]})
    root = Path(cfg.paths.root_dir).resolve()
    assign_hashes(stages, root)
    check_pipeline_config(cfg, stages)
    by_name = {s.name: s for s in stages}
    plan_rows = [{"stage": s.name, "hash": s.hash, "cached": s.done, "dir": str(s.dir)} for s in stages]
    (run_dir / "stages.json").write_text(json.dumps(plan_rows, indent=1))
    if cfg.dry_run:
        for r in plan_rows:
            print(f"{r['stage']:24s} {r['hash']}  {'cached' if r['cached'] else 'to run':7s}  {r['dir']}")
        return {"dry_run": True, "stages": plan_rows}

    seconds = {}
    t_all = time.perf_counter()
    bar = tqdm(stages, desc="pipeline", unit="stage")
    for s in bar:
        bar.set_postfix_str(s.name)
        if s.done:
            tqdm.write(f"{s.name}: cached ({s.dir})")
            seconds[s.name] = 0.0
            continue
        tqdm.write(f"{s.name}: running, log {s.dir / 'stage.log'}")
        seconds[s.name] = run_stage_process(s, by_name, float(cfg.min_free_disk_GB))
        tqdm.write(f"{s.name}: done in {seconds[s.name]:.1f} s")
    bar.close()
    outputs = {s.name: load_outputs(s) for s in stages}
    t_report = time.perf_counter()
    report = write_report(run_dir, outputs, OmegaConf.to_yaml(cfg, resolve=True), seconds)
    seconds["report"] = time.perf_counter() - t_report
    missing = [n for n, o in outputs.items() if "summary" not in o and "metrics" not in o]
    if missing:
        raise PipelineError(f"stages {missing} finished without a summary: see their stage.log")
    return {"report_md": report["report_md"], "report_html": report["report_html"], "headline": report["headline"],
            "stage_seconds": seconds, "total_s": time.perf_counter() - t_all,
            "stage_cpu_seconds": {n: o.get("cpu_seconds") for n, o in outputs.items()},
            "stages": {s.name: str(s.dir) for s in stages}}


def _report(summary: dict, run) -> None:
    if summary.get("dry_run"):
        return
    print("\n== hedgenet pipeline ==")
    for name, sec in summary["stage_seconds"].items():
        print(f"  {name:24s} {'cached' if sec == 0 else f'{sec:8.1f} s'}")
    for k, v in summary["headline"].items():
        print(f"  {k:28s} {v:.4g}")
    print(f"report: {summary['report_html']}\n        {summary['report_md']}")
    print(f"total {summary['total_s']:.1f} s")


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
    from hedgenet.reference.blocks import CellTooSmallError, check_cell_for_cutoff
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

@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pipeline")
def _main(cfg: DictConfig) -> None:
    from hedgenet.pipeline import PipelineError

    run_stage("hedgenet-pipeline", cfg, run_pipeline, _report, (PipelineError,))


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
