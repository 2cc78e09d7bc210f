"""How far the reference's interlayer forces and binding energies are converged in the labelling supercell.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/interlayer_finite_size.py [--sizes 5 7 8 10 11] [--dz -0.25 0 0.15 0.6]

The reference (default GFN1-xTB, ``conf/reference/xtb.yaml``) samples only the Γ point of its supercell, so what it
says about the interlayer binding depends on the supercell. For the material's relaxed unit cell (default AB bilayer
graphene, relaxed with the reference and cached like hedgenet-label's) the script builds the N×N supercell for each
N, moves the top layer rigidly by Δd normal to the layers (the binding-curve cells of hedgenet-label's
``dataset.rigid``) and prints, per N, the top layer's mean force per atom along z (meV/Å; positive pushes the layers
apart) and the energy E(Δd) − E(0) per atom (meV/atom). The spread over N is the reference's own finite-size
error on the binding curve: a model trained on N×N labels cannot be judged more finely than that.

Sizes with N divisible by 3 fold the Dirac points onto Γ (docs/reference.md) and are refused for graphene-like
cells unless ``--allow-k-folding``. Cost of the defaults: about 7 CPU minutes (10 min wall on one thread beside a
training), four fifths of it the 10×10 and 11×11 cells (400 and 484 atoms). Writes ``--out`` (JSON) when given.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table, report  # noqa: E402


def relaxed_unit_cell(material: str, reference: str):
    """The reference solver and the material's unit cell relaxed with it (hedgenet-label's cache)."""
    from hydra import compose, initialize_config_dir

    from hedgenet.calculators import reference_unit_cell
    from hedgenet.config import resolved_dict

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("label", overrides=[f"material={material}", f"reference={reference}"])
    ref, unit, params = reference_unit_cell(resolved_dict(cfg.material), resolved_dict(cfg.reference),
                                            Path(cfg.paths.cache_dir), log=lambda *a: None)
    return ref, unit, params


def rigid_cell(unit, n: int, dz_A: float):
    """The n×n supercell with the top layer (``arrays["layer"]`` = 1) moved by ``dz_A`` (Å) along z."""
    from hedgenet.structures import make_supercell

    atoms = make_supercell(unit, [n, n])
    top = atoms.arrays["layer"] == atoms.arrays["layer"].max()
    atoms.positions[top, 2] += dz_A
    return atoms, top


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--material", default="ab_bilayer_graphene", help="a conf/material entry with two layers")
    parser.add_argument("--reference", default="xtb", help="a conf/reference entry")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 7, 8, 10, 11], help="N of the N×N supercells")
    parser.add_argument("--dz", type=float, nargs="+", default=[-0.25, 0.0, 0.15, 0.6],
                        help="rigid moves of the top layer normal to the layers (Å); 0 is always added")
    parser.add_argument("--allow-k-folding", action="store_true",
                        help="also run N divisible by 3 (the Dirac points fold onto Γ: wrong for graphene)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from hedgenet.physics.phonons import folds_k_onto_gamma

    folding = [n for n in args.sizes if folds_k_onto_gamma([n, n])]
    if folding and not args.allow_k_folding and "graphene" in args.material:
        parser.error(f"--sizes {folding}: N divisible by 3 folds graphene's Dirac points onto Γ, the only k-point "
                     "the reference samples, and its forces there are wrong (docs/reference.md). Fix: drop those "
                     "sizes, or pass --allow-k-folding to see the effect.")
    dz = sorted(set([0.0] + list(args.dz)))
    ref, unit, params = relaxed_unit_cell(args.material, args.reference)
    if "layer" not in unit.arrays or len(set(unit.arrays["layer"])) < 2:
        parser.error(f"--material {args.material}: needs two layers (atoms.arrays['layer'] with 0 and 1).")
    print(f"{args.material}, {args.reference}, relaxed {params}", flush=True)

    results = {"material": args.material, "reference": args.reference, "structure_params": params,
               "dz_A": dz, "by_size": {}}
    for n in args.sizes:
        forces, energies, seconds = [], [], []
        for d in dz:
            atoms, top = rigid_cell(unit, n, d)
            t0 = time.perf_counter()
            res = ref.compute(atoms, with_blocks=False)
            seconds.append(time.perf_counter() - t0)
            forces.append(1e3 * float(res.forces_eV_per_A[top, 2].mean()))
            energies.append(float(res.energy_eV) / len(atoms))
        e0 = energies[dz.index(0.0)]
        results["by_size"][str(n)] = {
            "atoms": len(atoms), "top_layer_force_z_meV_per_A": forces,
            "energy_vs_d0_meV_per_atom": [1e3 * (e - e0) for e in energies], "seconds": seconds}
        print(f"{n}×{n}: {len(atoms)} atoms, {np.sum(seconds):.1f} s", flush=True)

    header = ["N×N", "atoms"] + [f"F_z top, Δd={d:+g} Å (meV/Å)" for d in dz] \
        + [f"E({d:+g})−E(0) (meV/atom)" for d in dz if d != 0.0]
    rows = []
    for n, r in results["by_size"].items():
        e = [x for d, x in zip(dz, r["energy_vs_d0_meV_per_atom"]) if d != 0.0]
        rows.append([f"{n}×{n}", r["atoms"]] + r["top_layer_force_z_meV_per_A"] + e)
    by_size = results["by_size"].values()
    force_ptp = np.ptp([r["top_layer_force_z_meV_per_A"] for r in by_size], axis=0)
    energy_ptp = np.ptp([r["energy_vs_d0_meV_per_atom"] for r in by_size], axis=0)
    spread = {f"{d:+g}": {"force_meV_per_A": float(f), "energy_meV_per_atom": float(e)}
              for d, f, e in zip(dz, force_ptp, energy_ptp)}
    results["spread_over_sizes"] = spread
    rows.append(["spread (max − min)", ""] + [spread[f"{d:+g}"]["force_meV_per_A"] for d in dz]
                + [spread[f"{d:+g}"]["energy_meV_per_atom"] for d in dz if d != 0.0])
    title = (f"{args.reference} on rigid {args.material} cells: the top layer's mean force per atom along z and the "
             "energy relative to the relaxed distance, by supercell")
    if args.out:
        report(header, rows, title, results, args.out)
    else:
        print_table(header, rows, title=title)
    return results


if __name__ == "__main__":
    main()
