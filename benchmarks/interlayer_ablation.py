"""Which means make the model's interlayer physics right? An ablation on the main job's material.

Labels (once, cached under ``--root``) the main job's dataset of 5×5 AB bilayer graphene cells (rattles and
thermal samples) and a set of rigid-layer cells (top layer shifted: interlayer distance scan and sliding), the
reference's phonons on the same 5×5 cell, and held-out test cells; then trains one model per arm and measures,
per arm:

- test force MAE and the MAE of each layer's mean force per atom (meV/Å), H MAE (meV);
- phonon MAE against the reference on Γ–M–K–Γ (THz) and the Γ interlayer shear and breathing modes (THz),
  model and reference;
- the residual force at the relaxed (undisplaced) geometry: largest |F| on an atom and the largest layer-mean
  force (meV/Å); the reference's is ~0;
- the sliding force: the top layer's mean x force per atom (meV/Å) on the rigid cells slid by 0.03, 0.08, 0.2 Å.

Arms (``--arms``, default all; every arm without ``registry`` in its name runs with
``relations.registry_widths_A=[]``): ``base`` (no rigid cells, no layer loss, no registry), ``layer_loss`` (+ the
layer net-force loss, weight 1000), ``rigid`` (+ rigid-layer cells ``scan`` in the training set),
``rigid+layer_loss`` (both), ``rigid_pm+layer_loss`` (the ``pm`` set of small two-sided shifts instead),
``..._1e4`` (loss weight 10⁴), ``registry`` (the interlayer registry features alone),
``rigid_pm+layer_loss+registry`` and ``...+in_plane`` (+ the in-plane layer-force loss, weight 10⁵).
``--extra KEY=VALUE ...`` passes further hedgenet-train overrides to every arm (name the runs with ``--tag``).

    OMP_NUM_THREADS=1 python benchmarks/interlayer_ablation.py --root outputs/interlayer_ablation [--epochs 30]

Prints a markdown table (and writes ``<root>/ablation_seed<seed>_e<epochs>[_<tag>].json``); every run directory stays under ``--root``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hedgenet.pipeline.stages import run_logged

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table  # noqa: E402

RIGID_SETS = {
    "scan": [[0.0, 0.0, -0.15], [0.0, 0.0, -0.075], [0.0, 0.0, 0.075], [0.0, 0.0, 0.15], [0.0, 0.0, 0.3],
             [0.0, 0.0, 0.6], [0.05, 0.0, 0.0], [0.15, 0.0, 0.0], [0.4, 0.0, 0.0], [0.0, 0.05, 0.0], [0.0, 0.15, 0.0],
             [0.0, 0.4, 0.0]],
    "pm": [[0.0, 0.0, d] for d in (-0.15, -0.075, -0.03, 0.03, 0.075, 0.15, 0.3, 0.6)]
          + [[s * x, 0.0, 0.0] for x in (0.03, 0.08, 0.2) for s in (1, -1)]
          + [[0.0, s * y, 0.0] for y in (0.03, 0.08, 0.2) for s in (1, -1)],
}
"""Top-layer shifts (Å). ``scan``: the interlayer distance d0 − 0.15 … d0 + 0.6 and one-sided slides along x and
y (12 cells); ``pm``: the distance scan with ±0.03 Å near d0 and slides of ±0.03, ±0.08, ±0.2 Å along x and y,
both signs (20 cells: the harmonic region of the shear mode, whose restoring force is ~2 meV/Å per atom at
0.05 Å)."""

ARMS = {
    "base": {"rigid": None, "layer_forces": 0.0, "registry": False},
    "layer_loss": {"rigid": None, "layer_forces": 1000.0, "registry": False},
    "rigid": {"rigid": "scan", "layer_forces": 0.0, "registry": False},
    "rigid+layer_loss": {"rigid": "scan", "layer_forces": 1000.0, "registry": False},
    "rigid_pm+layer_loss": {"rigid": "pm", "layer_forces": 1000.0, "registry": False},
    "rigid_pm+layer_loss_1e4": {"rigid": "pm", "layer_forces": 10000.0, "registry": False},
    "rigid_pm+layer_loss+registry": {"rigid": "pm", "layer_forces": 1000.0, "registry": True},
    "registry": {"rigid": None, "layer_forces": 0.0, "registry": True},
    "rigid_pm+layer_loss+registry+in_plane": {"rigid": "pm", "layer_forces": 1000.0, "registry": True,
                                              "layer_forces_in_plane": 1e5},
}


def finished(name: str, run_dir: Path, overrides) -> bool:
    """Whether ``run_dir`` holds a finished run of these overrides: its summary.json exists and, for a training,
    was written for the epochs asked (``train.max_epochs``) — a finished run directory copied under a longer run's
    name, or asked for more epochs, is not finished."""
    summary = run_dir / "summary.json"
    if not summary.exists():
        return False
    asked = [o.split("=", 1)[1] for o in overrides if o.startswith("train.max_epochs=")]
    if name != "train" or not asked:
        return True
    epochs = json.loads(summary.read_text()).get("epochs")  # absent in summaries older than the field: finished
    return epochs is None or epochs == int(asked[-1])


def cli(name: str, root: Path, run_dir: Path, *overrides: str) -> dict:
    """Run ``hedgenet-<name>`` (Hydra) into ``run_dir`` unless it finished before (:func:`finished`); returns its
    summary.json. A training killed before it finished, or asked for more epochs than it ran, continues from its
    last checkpoint (as the pipeline's train stage does)."""
    summary = run_dir / "summary.json"
    if not finished(name, run_dir, overrides):
        if name == "train":
            overrides = (*overrides, "train.resume=auto")
        cmd = [sys.executable, "-m", f"hedgenet.cli.{name}", *overrides, f"hydra.run.dir={run_dir}"]
        t0 = time.perf_counter()
        log = run_dir.parent / f"{run_dir.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        if run_logged(cmd, log, env={"HEDGENET_ROOT": str(root)}) != 0:
            raise SystemExit(f"{' '.join(cmd)} failed (log {log}):\n{log.read_text()[-3000:]}")
        print(f"  {run_dir.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(summary.read_text())


def gamma_modes(run_dir: Path) -> dict:
    modes = json.loads((run_dir / "gamma_modes.json").read_text())
    out = {}
    for name in ("interlayer shear", "layer breathing"):
        f = [m["frequency_THz"] for m in modes if m["name"] == name]
        out[name] = float(np.mean(f)) if f else float("nan")
    return out


def residual_forces(calc, phonons_dir: Path) -> tuple[float, float]:
    """Largest |F| per atom and largest layer-mean force (meV/Å) of ``calc`` on the undisplaced supercell of
    the phonon run (the geometry relaxed with the reference, in its own relaxation cell)."""
    import phonopy
    from ase import Atoms

    from hedgenet.physics.phonons import equilibrium_residuals
    from hedgenet.structures.supercell import supercell_atoms

    ph = phonopy.load(str(phonons_dir / "phonopy_params.yaml"), produce_fc=False)
    unit = ph.unitcell
    unit_atoms = Atoms(numbers=unit.numbers, positions=unit.positions, cell=unit.cell, pbc=True)
    unit_atoms.arrays["layer"] = (unit.positions[:, 2] > unit.positions[:, 2].mean()).astype(np.int64)
    r = equilibrium_residuals(calc, supercell_atoms(ph, unit_atoms))
    return r["residual_force_max_meV_A"], r["residual_layer_force_max_meV_A"]


def sliding_forces(calc, rigid_path: Path) -> dict[float, float]:
    """Top layer's mean x force per atom (meV/Å) of ``calc`` on the rigid cells slid by +dx along x (dy = dz = 0)
    of ``rigid_path``: the sliding force, whose slope at dx → 0 sets the shear mode."""
    from hedgenet.data.store import DatasetStore, sample_atoms

    out = {}
    for s in DatasetStore(rigid_path).iter_samples():
        shift = s.get("shift_A")
        if not isinstance(shift, list) or shift[0] <= 0 or shift[1] != 0 or shift[2] != 0:
            continue
        atoms = sample_atoms(s)
        top = atoms.arrays["layer"] == atoms.arrays["layer"].max()
        if calc is None:
            forces = s["forces"]
        else:
            atoms.calc = calc
            forces = atoms.get_forces()
        out[float(shift[0])] = 1e3 * float(forces[top, 0].mean())
    return dict(sorted(out.items()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("outputs/interlayer_ablation"))
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="labelling processes")
    p.add_argument("--extra", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further hedgenet-train overrides for every arm, e.g. data.batch_size=1")
    p.add_argument("--tag", default="", help="suffix of the run names (arms with other --extra)")
    args = p.parse_args(argv)
    root = args.root.resolve()
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    data = root / "data"

    print("labelling (cached after the first run)", flush=True)
    # the main job's recipe without rigid cells (rattles + thermal samples); the rigid sets are separate files
    cli("label", root, runs / "label_default", "dataset.rigid.shifts_A=[]", f"dataset.n_workers={args.workers}",
        "progress=false")
    for name in sorted({ARMS[a]["rigid"] for a in args.arms if ARMS[a]["rigid"]}):
        shifts = json.dumps(RIGID_SETS[name]).replace(" ", "")
        cli("label", root, runs / f"label_rigid_{name}", f"dataset.name=ab_bilayer_graphene_rigid_{name}",
            "dataset.rattle.n_per_amplitude=0", "dataset.thermal.n_per_temperature=0", f"dataset.rigid.shifts_A={shifts}",
            f"dataset.n_workers={args.workers}", "progress=false")
    cli("label", root, runs / "label_test", "dataset.name=ab_bilayer_graphene_test", "seed=777", "dataset.rigid.shifts_A=[]",
        "dataset.rattle.n_per_amplitude=2", "dataset.thermal.n_per_temperature=2", f"dataset.n_workers={args.workers}",
        "progress=false")
    ref_ph = runs / "phonons_reference"
    cli("phonons", root, ref_ph, "phonons.supercell=[5,5]", "reference.block_cutoff=5.0")
    ref_modes = gamma_modes(ref_ph)
    from hedgenet.calculators import ModelCalculator, ReferenceCalculator
    from hedgenet.reference import make_reference

    ref_residual = residual_forces(ReferenceCalculator(make_reference("xtb", block_cutoff=5.0)), ref_ph)
    pm = data / "ab_bilayer_graphene_rigid_pm.h5"
    ref_slide = sliding_forces(None, pm) if pm.exists() else {}

    rows, results = [], {}
    for arm in args.arms:
        spec = ARMS[arm]
        paths = [str(data / "ab_bilayer_graphene_default.h5")]
        if spec["rigid"]:
            paths.append(str(data / f"ab_bilayer_graphene_rigid_{spec['rigid']}.h5"))
        name = f"{arm}_seed{args.seed}_e{args.epochs}{'_' + args.tag if args.tag else ''}"
        train_dir = runs / f"train_{name}"
        t0 = time.perf_counter()
        metrics = cli("train", root, train_dir, f"data.paths=[{','.join(paths)}]",
                      f"data.test_paths=[{data / 'ab_bilayer_graphene_test.h5'}]", f"seed={args.seed}",
                      f"train.max_epochs={args.epochs}", "train.scheduler.patience=4", "trainer.precision=32-true",
                      f"train.loss_weights.layer_forces={spec['layer_forces']}",
                      f"train.loss_weights.layer_forces_in_plane={spec.get('layer_forces_in_plane', 0.0)}",
                      *([] if spec["registry"] else ["relations.registry_widths_A=[]"]), *args.extra)
        train_s = time.perf_counter() - t0
        model = train_dir / "model.pt"
        ph_dir = runs / f"phonons_{name}"
        ph = cli("phonons", root, ph_dir, "phonons.supercell=[5,5]", "reference.block_cutoff=5.0", "calculator=model",
                 f"model_path={model}", f"compare_with={ref_ph}")
        modes = gamma_modes(ph_dir)
        f_max, f_layer = residual_forces(ModelCalculator(str(model)), ph_dir)
        slide = sliding_forces(ModelCalculator(str(model)), pm) if pm.exists() else {}
        results[arm] = {"metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                        "phonon_mae_THz": ph["frequency_mae_vs_compare_THz"], "gamma_model_THz": modes,
                        "gamma_reference_THz": ref_modes, "residual_force_max_meV_A": f_max,
                        "residual_layer_force_meV_A": f_layer, "train_wall_s": train_s,
                        "sliding_force_meV_A": slide, "reference_sliding_force_meV_A": ref_slide}
        rows.append([arm, metrics.get("test/forces_mae", float("nan")), metrics.get("test/layer_forces_mae", float("nan")),
                     metrics.get("test/H_all_mae", float("nan")), ph["frequency_mae_vs_compare_THz"],
                     modes["interlayer shear"], modes["layer breathing"], f_max, f_layer,
                     " / ".join(f"{v:.3f}" for v in slide.values())])
    out = root / f"ablation_seed{args.seed}_e{args.epochs}{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(results, indent=1))
    print_table(["arm", "force MAE (meV/Å)", "layer-force MAE (meV/Å)", "H MAE (meV)", "phonon MAE (THz)",
                 "Γ shear (THz)", "Γ breathing (THz)", "residual max |F| (meV/Å)", "residual layer F (meV/Å)",
                 "sliding force at dx = " + " / ".join(f"{x:g}" for x in ref_slide) + " Å (meV/Å)"],
                rows + [["reference (xTB)", 0.0, 0.0, 0.0, 0.0, ref_modes["interlayer shear"],
                         ref_modes["layer breathing"], *ref_residual, " / ".join(f"{v:.3f}" for v in ref_slide.values())]],
                title=f"5×5 AB bilayer graphene, {args.epochs} epochs, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
