"""``hedgenet-compare``: one table per material comparing trained models over seeds (markdown, CSV, HTML).

    hedgenet-compare outputs/train/compare_baselines/<time>
    hedgenet-compare <multirun dir> --phonon-supercell 7 7 --fermi-velocity outputs/fermi_velocity/runs
    hedgenet-compare <multirun dir> --phonons off --out report/
    hedgenet-compare [<multirun dir>] --learning-curves outputs/learning_curves/learning_curves.json

Reads every hedgenet-train run below the directory (resolved_config.yaml, metrics.json, split.json,
model.pt), groups them per material and arm (model config × relation set), and writes into ``--out``
(default ``<dir>/compare``): comparison.md, comparison.csv (mean, std, n per arm), runs.csv (per seed),
comparison.html (self-contained) and figures per material. Columns: force, energy, H (on-site, intra,
inter) and eigenvalue MAE of the held-out test set (validation set when a run has none), phonon-frequency
MAE of each model against the reference's finite differences (reference phonons cached), v_F(T) error
against a reference hedgenet-fermi-velocity run (when ``--fermi-velocity`` has runs of these models),
parameter count, training time and inference time per structure; mean ± std over seeds.
``--learning-curves`` adds a section with the table and the log–log figure of a learning-curves benchmark
(test errors against the number of labelled cells per model family, ``benchmarks/learning_curves.py``); alone,
without a run directory, the report holds only that section.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="hedgenet-compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="?", default=None,
                   help="multirun directory of hedgenet-train runs (e.g. experiment=compare_baselines)")
    p.add_argument("--out", type=Path, default=None,
                   help="report directory (default: <runs>/compare, else beside the learning-curves JSON)")
    p.add_argument("--phonons", choices=["auto", "on", "off"], default="auto",
                   help="phonon-frequency MAE: auto = on for cells up to 200 atoms and 60 displacements")
    p.add_argument("--phonon-supercell", type=int, nargs=2, metavar=("N1", "N2"), default=None,
                   help="phonon supercell (default: the material's label_supercell)")
    p.add_argument("--phonon-npoints", type=int, default=21, help="q-points per segment of Γ–M–K–Γ")
    p.add_argument("--fermi-velocity", type=Path, action="append", default=[], metavar="DIR",
                   help="folder of hedgenet-fermi-velocity runs (one reference, models by model_path); repeatable")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="reference phonons and relaxed cells (default: $HEDGENET_ROOT/.cache/hedgenet)")
    p.add_argument("--learning-curves", type=Path, default=None, metavar="JSON",
                   help="learning_curves.json of benchmarks/learning_curves.py: its table and figure in the report")
    args = p.parse_args(argv)
    if args.runs is None and args.learning_curves is None:
        p.error("give a run directory, --learning-curves JSON, or both")

    from hedgenet.physics import comparison
    from hedgenet.physics.comparison import PhononSettings
    from hedgenet.report import learning_curves
    from hedgenet.report.compare import build_tables, find_fermi_velocity_runs
    from hedgenet.report.render import write_report
    from hedgenet.report.runs import CompareError, find_runs, group_runs

    cache = args.cache_dir or Path(os.environ.get("HEDGENET_ROOT", ".")) / ".cache" / "hedgenet"
    source = args.runs if args.runs is not None else args.learning_curves
    out = args.out or (args.runs / "compare" if args.runs is not None else args.learning_curves.parent / "compare")
    try:
        lc_data = learning_curves.load(args.learning_curves) if args.learning_curves is not None else None
        groups = group_runs(find_runs(args.runs)) if args.runs is not None else {}
        fv = find_fermi_velocity_runs(args.fermi_velocity)
        settings = PhononSettings(mode=args.phonons, npoints=args.phonon_npoints,
                                  supercell=tuple(args.phonon_supercell) if args.phonon_supercell else None)
        tables, notes = build_tables(groups, settings, cache, fv, log=lambda m: print(m, flush=True),
                                     phonon_source=comparison)
        curves = None
        if lc_data is not None:
            out.mkdir(parents=True, exist_ok=True)
            curves = learning_curves.section(lc_data, out / "learning_curves.png", args.learning_curves)
        files = write_report(tables, notes, source, out, curves)
    except CompareError as err:
        print(f"hedgenet-compare: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    for t in tables:
        print(f"{t.material}: {sum(len(a.runs) for a in t.arms)} runs in {len(t.arms)} arms ({t.split} set)")
    print(files["markdown"].read_text().split("\n## Notes")[0] if files else "")
    print("wrote " + ", ".join(str(f) for f in files.values()))


if __name__ == "__main__":
    main()
