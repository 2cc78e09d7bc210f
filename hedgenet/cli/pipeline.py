"""``hedgenet-pipeline``: material → labelled data → trained HedgeNet → phonons, couplings, v_F(T) → report.

    hedgenet-pipeline                                   # AB bilayer graphene with GFN1-xTB (the README's job)
    hedgenet-pipeline overrides.fermi_velocity.sampler=sdm
    hedgenet-pipeline experiment=twisted_bilayer_graphene
    hedgenet-pipeline dry_run=true

Stages run as their own console scripts in cached directories (:mod:`hedgenet.pipeline.stages`); this run's
directory gets report.md, report.html, headline.json, stages.json and the resolved config.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hedgenet.config import config_dir
from hedgenet.run_io import run_stage


def _report(summary: dict, run) -> None:
    if summary.get("dry_run"):
        return
    print("\n== hedgenet pipeline ==")
    for name, sec in summary["stage_seconds"].items():
        print(f"  {name:24s} {'cached' if sec == 0 else f'{sec:8.1f} s'}")
    for k, v in summary["headline"].items():
        if isinstance(v, dict):  # model and reference side by side
            print(f"  {k:28s} " + ", ".join(f"{side} {x:.4g}" for side, x in v.items() if x is not None))
        else:
            print(f"  {k:28s} {v:.4g}")
    print(f"report: {summary['report_html']}\n        {summary['report_md']}")
    print(f"total {summary['total_s']:.1f} s")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pipeline")
def _main(cfg: DictConfig) -> None:
    from hedgenet.pipeline.run import run_pipeline
    from hedgenet.pipeline.stages import PipelineError

    run_stage("hedgenet-pipeline", cfg, run_pipeline, _report, (PipelineError,))


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
