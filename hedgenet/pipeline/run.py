"""The pipeline's run: plan the stages, hash and check them, run the unfinished ones as their own console
scripts, collect their outputs and write the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def run_pipeline(cfg: DictConfig, run_dir: Path) -> dict:
    from hydra.core.hydra_config import HydraConfig
    from tqdm import tqdm

    from hedgenet.pipeline.checks import check_pipeline_config
    from hedgenet.pipeline.report import write_report
    from hedgenet.pipeline.stages import (
        PipelineError,
        assign_hashes,
        load_outputs,
        plan,
        run_stage_process,
    )

    hydra_cfg = HydraConfig.get()
    choices = hydra_cfg.runtime.choices
    # the material's own overrides on the pipeline's command line (material.path=…, material.params.m=…) go to
    # every stage with the material itself
    material_overrides = [o for o in hydra_cfg.overrides.task if o.lstrip("+~").startswith("material.")]
    stages = plan(cfg, {"material": choices["material"], "reference": choices["reference"],
                        "material_overrides": material_overrides})
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
    for w in report["warnings"]:
        tqdm.write(f"warning: {w}")
    missing = [n for n, o in outputs.items() if "summary" not in o and "metrics" not in o]
    if missing:
        raise PipelineError(f"stages {missing} finished without a summary: see their stage.log")
    return {"report_md": report["report_md"], "report_html": report["report_html"], "headline": report["headline"],
            "warnings": report["warnings"], "stage_seconds": seconds, "total_s": time.perf_counter() - t_all,
            "stage_cpu_seconds": {n: o.get("cpu_seconds") for n, o in outputs.items()},
            "stages": {s.name: str(s.dir) for s in stages}}
