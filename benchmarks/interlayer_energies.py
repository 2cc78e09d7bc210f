"""The interlayer binding curve E(d) and the sliding energies of trained models against the reference.

Labels (once, cached under ``--root``) held-out rigid-layer cells of the 5×5 AB bilayer with the reference
(``hedgenet-label``, no rattle): the top layer moved normal to the layers by Δd (the binding curve E(d) around the
relaxed distance, ``--dz``) and slid along the armchair line through the stackings, the top layer moved by y C–C
bonds along y (``--path``): AA at y = −1, AB at 0, the saddle point SP at ½, BA (AB's mirror) at 1. Then, for every
model, the energy of each cell relative to the undisplaced AB cell (meV/atom) against the reference's, and per set
the mean and largest |model − reference|; also the SP and AA energies (the sliding barrier and the stacking energy)
and the distance of the binding curve's minimum (a parabola through the lowest point and its two neighbours).

    OMP_NUM_THREADS=1 python benchmarks/interlayer_energies.py --root outputs/interlayer_energies \\
        --model <train run>/model.pt [<another>/model.pt ...] [--names a b ...]

Prints the tables and writes ``<root>/interlayer_energies[_<tag>].json``. The default Δd and y avoid the shifts of
hedgenet-label's default rigid cells, except that SP and AA are asked for by name; with ``--training-shifts`` (the
training set's ``dataset.rigid.shifts_A``) the table marks the training geometries among them and the binding-curve
cells beyond the training set's range of Δd (an extrapolation: a model's interlayer relation ends at its cutoff,
``relations.r_inter``, while the reference's dispersion reaches farther).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table  # noqa: E402
from interlayer_ablation import cli  # noqa: E402

DZ_A = [-0.4, -0.2, -0.1, -0.05, 0.05, 0.1, 0.2, 0.45, 0.8, 1.2, 2.0]
"""Changes of the interlayer distance (Å) of the binding-curve cells."""

PATH_Y = [-1.0, -0.875, -0.625, -0.375, -0.125, 0.0625, 0.1875, 0.3125, 0.4375, 0.5, 0.5625, 0.6875, 0.8125, 0.9375]
"""Top-layer slides along y in C–C bonds: AA at −1, AB at 0, SP at ½, BA at 1."""

TARGET_MEV_ATOM = 0.1
"""The accuracy asked of a faithful model on both sets (meV/atom)."""


def bond_A(a_A: float) -> float:
    """The C–C bond (Å): hedgenet's AB bilayer becomes AA when its top layer moves by −a/√3 along y (its atom
    eclipsing a bottom one at (0, a/√3) moves onto the bottom atom at the origin), BA by +a/√3."""
    return a_A / math.sqrt(3)


def shifts(dz, path_y, a_A: float) -> list[list[float]]:
    """The rigid shifts [dx, dy, dz] (Å): the undisplaced cell first, then the binding curve, then the slides."""
    return ([[0.0, 0.0, 0.0]] + [[0.0, 0.0, float(z)] for z in dz]
            + [[0.0, round(float(y) * bond_A(a_A), 4), 0.0] for y in path_y])


def cells(path: Path) -> list[dict]:
    """The labelled rigid cells: shift (Å), atoms (ase.Atoms with the layer index) and the reference energy (eV)."""
    from hedgenet.data.store import DatasetStore, sample_atoms

    out = []
    for s in DatasetStore(path).iter_samples():
        out.append({"shift_A": list(s["shift_A"]), "atoms": sample_atoms(s), "energy_eV": float(s["energy"])})
    return out


def relative_meV_atom(energies: list[float], n_atoms: int) -> np.ndarray:
    """Energies relative to the first (the undisplaced cell), meV per atom."""
    e = np.asarray(energies)
    return 1e3 * (e - e[0]) / n_atoms


def curve_minimum(dz: np.ndarray, e: np.ndarray) -> float:
    """Δd (Å) of a parabola's minimum through the lowest point of a binding curve and its two neighbours."""
    k = int(np.clip(np.argmin(e), 1, len(e) - 2))
    c = np.polyfit(dz[k - 1 : k + 2], e[k - 1 : k + 2], 2)
    return float(-c[1] / (2 * c[0])) if c[0] > 0 else float("nan")


def compare(cells_: list[dict], model_e: list[float], a_A: float, training: list) -> dict:
    """Per cell and per set: the model's energies against the reference's (meV/atom, relative to the AB cell).
    ``training``: the training set's rigid shifts (marks its geometries and the Δd beyond its range)."""
    n = len(cells_[0]["atoms"])
    ref = relative_meV_atom([c["energy_eV"] for c in cells_], n)
    mod = relative_meV_atom(model_e, n)
    seen = {tuple(round(float(v), 3) for v in s) for s in training}
    dz_seen = [s[2] for s in training if s[0] == 0 and s[1] == 0] or [0.0]
    rows, sets = [], {"binding curve": [], "sliding line": []}
    for c, r, m in zip(cells_[1:], ref[1:], mod[1:]):
        dx, dy, dz = c["shift_A"]
        kind, x = ("binding curve", dz) if dx == 0 and dy == 0 else ("sliding line", dy / bond_A(a_A))
        note = ("training geometry" if tuple(round(v, 3) for v in c["shift_A"]) in seen else
                "beyond the training Δd" if training and kind == "binding curve" and not min(dz_seen) <= dz <= max(dz_seen)
                else "")
        rows.append({"set": kind, "x": float(x), "reference_meV_atom": float(r), "model_meV_atom": float(m),
                     "error_meV_atom": float(m - r), "note": note})
        sets[kind].append(rows[-1])
    out = {"cells": rows}
    for kind, rs in sets.items():
        err = np.abs([r["error_meV_atom"] for r in rs])
        inside = [abs(r["error_meV_atom"]) for r in rs if not r["note"].startswith("beyond")]
        out[kind] = {"mae_meV_atom": float(err.mean()), "max_meV_atom": float(err.max()), "n": len(rs),
                     "within_training_range_max_meV_atom": float(max(inside, default=np.nan))}
    by_y = {round(r["x"], 4): r for r in sets["sliding line"]}
    for name, y in (("saddle_point", 0.5), ("AA", -1.0)):
        if y in by_y:
            out[f"{name}_meV_atom"] = {"model": by_y[y]["model_meV_atom"], "reference": by_y[y]["reference_meV_atom"]}
    curve = sorted([(0.0, 0.0, 0.0)] + [(r["x"], r["reference_meV_atom"], r["model_meV_atom"])
                                        for r in sets["binding curve"]])
    dz = np.array([c[0] for c in curve])
    out["binding_minimum_dz_A"] = {"model": curve_minimum(dz, np.array([c[2] for c in curve])),
                                   "reference": curve_minimum(dz, np.array([c[1] for c in curve]))}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=Path("outputs/interlayer_energies"),
                   help="HEDGENET_ROOT of the labelling run; the results are written here")
    p.add_argument("--model", type=Path, nargs="+", required=True, help="model.pt of hedgenet-train runs")
    p.add_argument("--names", nargs="*", default=None, help="a name per model (default: its run directory's)")
    p.add_argument("--a", type=float, default=2.4581, help="the material's lattice constant (Å): sets the C–C bond")
    p.add_argument("--dz", type=float, nargs="+", default=DZ_A, help="interlayer-distance changes (Å)")
    p.add_argument("--path", type=float, nargs="+", default=PATH_Y,
                   help="slides along y in C–C bonds (AA −1, AB 0, SP ½, BA 1)")
    p.add_argument("--training-shifts", type=str, default=None,
                   help="the training set's dataset.rigid.shifts_A (a JSON list): its geometries are marked")
    p.add_argument("--tag", default="", help="suffix of the results file (several comparisons under one --root)")
    p.add_argument("--label-extra", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further hedgenet-label overrides (material, supercell, reference); another --root for each")
    args = p.parse_args(argv)
    names = args.names or [m.resolve().parent.name for m in args.model]
    if len(names) != len(args.model):
        p.error(f"--names: {len(names)} names for {len(args.model)} models")
    missing = [str(m) for m in args.model if not m.exists()]
    if missing:
        p.error(f"no such model file: {', '.join(missing)} (the model.pt of a finished hedgenet-train run)")
    root = args.root.resolve()
    sh = shifts(args.dz, args.path, args.a)
    cli("label", root, root / "runs" / "label_interlayer", "dataset.name=interlayer_scan", "dataset.rattle.n_per_amplitude=0",
        "dataset.thermal.n_per_temperature=0", "dataset.strain.strains=[]", "dataset.force_constants=false",
        f"dataset.rigid.shifts_A={json.dumps(sh).replace(' ', '')}", "progress=false", *args.label_extra)
    labelled = cells(root / "data" / "interlayer_scan.h5")
    order = {tuple(round(v, 4) for v in s): k for k, s in enumerate(sh)}
    labelled.sort(key=lambda c: order[tuple(round(v, 4) for v in c["shift_A"])])
    if labelled[0]["shift_A"] != [0.0, 0.0, 0.0]:
        raise SystemExit("the labelled set has no undisplaced cell: delete its dataset and rerun")
    training = json.loads(args.training_shifts or "[]")

    from hedgenet.calculators import ModelCalculator

    results = {"settings": {"a_A": args.a, "dz_A": args.dz, "path_y": args.path, "target_meV_atom": TARGET_MEV_ATOM,
                            "n_atoms": len(labelled[0]["atoms"])}, "models": {}}
    for name, model in zip(names, args.model):
        calc = ModelCalculator(str(model))
        energies = []
        for c in labelled:
            atoms = c["atoms"].copy()
            atoms.calc = calc
            energies.append(float(atoms.get_potential_energy()))
        res = compare(labelled, energies, args.a, training)
        results["models"][name] = {"model": str(model), **res}
        rows = [[r["set"], f"{r['x']:+.4g}", r["reference_meV_atom"], r["model_meV_atom"], r["error_meV_atom"],
                 r["note"]] for r in res["cells"]]
        print_table(["set", "Δd (Å) / y (C–C bonds)", "reference (meV/atom)", "model (meV/atom)", "model − reference",
                     ""],
                    rows, title=f"{name}: energies relative to the AB cell ({len(labelled[0]['atoms'])} atoms)")
    summary = []
    for name, res in results["models"].items():
        sp, aa, dmin = res.get("saddle_point_meV_atom", {}), res.get("AA_meV_atom", {}), res["binding_minimum_dz_A"]
        summary.append([name, res["binding curve"]["mae_meV_atom"], res["binding curve"]["max_meV_atom"],
                        res["binding curve"]["within_training_range_max_meV_atom"],
                        res["sliding line"]["mae_meV_atom"], res["sliding line"]["max_meV_atom"],
                        f"{sp.get('model', math.nan):.3f} / {sp.get('reference', math.nan):.3f}",
                        f"{aa.get('model', math.nan):.3f} / {aa.get('reference', math.nan):.3f}",
                        f"{dmin['model']:+.3f} / {dmin['reference']:+.3f}"])
    print_table(["model", "E(d) MAE", "E(d) max", "E(d) max in training range", "sliding MAE", "sliding max", "SP model / ref", "AA model / ref",
                 "minimum Δd (Å) model / ref"], summary,
                title=f"meV/atom (target ≤ {TARGET_MEV_ATOM}); SP and AA relative to AB")
    out = root / f"interlayer_energies{'_' + args.tag if args.tag else ''}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
