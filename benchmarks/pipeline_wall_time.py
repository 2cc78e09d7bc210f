"""Wall and CPU time of the README's first command on a fresh checkout, per step and per pipeline stage.

    python benchmarks/pipeline_wall_time.py --fresh /tmp/readme_run     # clone HEAD there, run the command
    python benchmarks/pipeline_wall_time.py --table /tmp/readme_run/hedgenet   # table of a finished checkout

``--fresh`` clones this repository's HEAD into ``DIR/hedgenet`` (with ``DIR/shared`` linked to ``../shared``),
takes the first ```` ```bash ```` block of the README verbatim, and runs its ``&&``-joined steps one after the
other in the clone with ``bash -c``, timing each (wall s, and user+system CPU s of the step's processes). The
last step is ``hedgenet-pipeline``; its run directory's ``summary.json`` gives the wall and CPU time of every
stage. Nothing of this checkout is reused: no outputs, no caches (pip's download cache excepted: set
``PIP_NO_CACHE_DIR=1`` to measure downloads too). The goal: set-up and pipeline together ≤ 15 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def readme_first_command(readme: Path) -> str:
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.S)
    if not blocks:
        raise SystemExit(f"{readme}: no ```bash block. Fix: the README must start with the set-up command")
    return blocks[0].strip()


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_fresh(root: Path) -> list[dict]:
    clone = root / "hedgenet"
    if clone.exists():
        raise SystemExit(f"{clone} exists. Fix: pass an empty --fresh directory (finished runs are never removed)")
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    shared = REPO.parent / "shared"
    if shared.exists() and not (root / "shared").exists():
        (root / "shared").symlink_to(shared)
    steps = [s.strip() for s in readme_first_command(clone / "README.md").split("&&")]
    rows = []
    with open(root / "readme_command.log", "w") as log:
        for step in steps:
            log.write(f"\n$ {step}\n")
            log.flush()
            cpu0, t0 = _children_cpu_s(), time.perf_counter()
            proc = subprocess.run(["bash", "-c", step], cwd=clone, stdout=log, stderr=subprocess.STDOUT)
            rows.append({"step": step, "wall_s": time.perf_counter() - t0, "cpu_s": _children_cpu_s() - cpu0})
            if proc.returncode != 0:
                raise SystemExit(f"step failed ({proc.returncode}): {step}. Log: {root / 'readme_command.log'}")
    (root / "readme_command_steps.json").write_text(json.dumps(rows, indent=1))
    return rows


def latest_pipeline_summary(clone: Path) -> dict:
    runs = sorted((clone / "outputs" / "pipeline" / "runs").glob("*/summary.json"))
    if not runs:
        raise SystemExit(f"no finished hedgenet-pipeline run under {clone}/outputs/pipeline/runs. "
                         "Fix: run the README's first command there (or --fresh)")
    return json.loads(runs[-1].read_text())


def print_tables(clone: Path, steps: list[dict] | None) -> None:
    if steps is None:
        f = clone.parent / "readme_command_steps.json"
        steps = json.loads(f.read_text()) if f.exists() else []
    if steps:
        print_table(["README step", "wall (s)", "CPU (s)"],
                    [[s["step"][:60], s["wall_s"], s["cpu_s"]] for s in steps],
                    title="README first command, step by step")
    summary = latest_pipeline_summary(clone)
    wall, cpu = summary["stage_seconds"], summary.get("stage_cpu_seconds", {})
    rows = [[name, sec, cpu.get(name) if cpu.get(name) is not None else "—"] for name, sec in wall.items()]
    rows.append(["total (hedgenet-pipeline)", summary["total_s"], sum(v or 0.0 for v in cpu.values())])
    print_table(["stage", "wall (s)", "CPU (s)"], rows,
                title="hedgenet-pipeline stages (0 s = cached; CPU = user+system of the stage's process)")
    print("\nheadline:", json.dumps(summary.get("headline", {}), indent=None))
    if steps:  # the README's whole first command: set-up and pipeline
        total, what = sum(s["wall_s"] for s in steps), "set-up and pipeline"
    else:
        total, what = summary["total_s"], "the pipeline alone (set-up not measured here)"
    print(f"15-minute goal, {what}: {'met' if total <= 900 else 'missed'} ({total / 60:.1f} min)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--fresh", type=Path, help="empty directory: clone HEAD there and run the README's first command")
    g.add_argument("--table", type=Path, help="a checkout where the README's first command has finished")
    a = p.parse_args()
    if a.fresh:
        steps = run_fresh(a.fresh.resolve())
        print_tables(a.fresh.resolve() / "hedgenet", steps)
    else:
        print_tables(a.table.resolve(), None)


if __name__ == "__main__":
    main()
