"""GFN1-xTB's dH/du and dS/du in supercells that fold K onto Γ (n divisible by 3) and in those that do not.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/coupling_cell_folding.py [--cells 5 6 7 8 9] [--root DIR]

tblite samples only Γ of the supercell, so an n×n graphene cell with n divisible by 3 puts the Dirac states
of K and K' into its self-consistent density (at the Fermi level, occupied by the electronic temperature's
smearing), while every other n leaves them out (see docs/reference.md). The electron–phonon couplings that
the Monte Carlo uses are dH/du and dS/du of the sampling cell. This benchmark displaces atom 0 of the relaxed
AB bilayer (a = 2.4581 Å, d = 3.3223 Å) by ± ``--delta`` Å along x and z in each n×n cell, takes the central
difference of every block, and compares the blocks near the displaced atom with the same blocks (same atoms
relative to atom 0, same bond vector) of the largest cell given, per class:

* ``own``: the blocks of the displaced atom itself (i or j = atom 0: the direct, "bond-stretch" coupling);
* ``near``: the other blocks whose first atom lies within ``--radius`` Å of atom 0 (the self-consistent,
  induced part: the charge that the displacement moves changes their on-site and hopping terms).

dH is taken in the gauge of the Fermi level of each cell, d(H − E_F S)/du, as the Monte Carlo's fit sees it.
Printed per cell and class: the relative difference ‖A_n − A_ref‖/‖A_ref‖ and the norm ratio ‖A_n‖/‖A_ref‖, for
d(H − E_F S)/du and dS/du, with the cell's Fermi level and Γ gap. Each cell's derivatives are kept in
``<root>/cell_<n>.npz``: a rerun continues.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import report  # noqa: E402

from hedgenet.calculators import ReferenceCalculator  # noqa: E402
from hedgenet.orbitals.blocks import blocks_on_edges  # noqa: E402
from hedgenet.reference import make_reference  # noqa: E402
from hedgenet.structures import build_structure, make_supercell  # noqa: E402

A, D = 2.4581, 3.3223
DIRECTIONS = {"x": 0, "z": 2}


def primitive_index(atoms, unit) -> np.ndarray:
    """Index in ``unit`` of every atom of a supercell of it (by fractional coordinates modulo the unit cell)."""
    inv = np.linalg.inv(unit.cell.array)
    frac = atoms.positions @ inv
    frac_unit = unit.positions @ inv
    diff = frac[:, None, :] - frac_unit[None, :, :]
    diff[..., :2] -= np.round(diff[..., :2])
    return np.argmin(np.linalg.norm(diff @ unit.cell.array, axis=-1), axis=1)


def cell_derivatives(n: int, ref, delta: float, root: Path) -> dict:
    """dH/du, dS/du (eV/Å, 1/Å) of atom 0 of the n×n cell along each direction, on the cell's edges."""
    path = root / f"cell_{n}.npz"
    if path.exists():
        return dict(np.load(path))
    unit = build_structure("bilayer_graphene", a=A, d=D, stacking="AB")
    atoms = make_supercell(unit, [n, n])
    calc = ReferenceCalculator(ref)
    t0 = time.perf_counter()
    res = ref.compute(atoms, with_blocks=True)
    eps = np.sort(res.orbital_energies_eV)
    ef = float(res.fermi_level_eV)
    n_occ = 2 * len(atoms)  # carbon: 4 valence electrons, 4 orbitals per atom
    ei, shift = res.blocks.edge_index, res.blocks.cell_shift
    out = {"edge_index": ei, "cell_shift": shift, "fermi_level_eV": ef, "gap_at_gamma_eV": float(eps[n_occ] - eps[n_occ - 1]),
           "positions": atoms.positions, "cell": atoms.cell.array, "prim": primitive_index(atoms, unit)}
    for name, x in DIRECTIONS.items():
        hs = []
        for sign in (1.0, -1.0):
            displaced = atoms.copy()
            displaced.positions[0, x] += sign * delta
            hs.append(blocks_on_edges(calc.predict_hamiltonian(displaced), ei, shift))
        out[f"dH_{name}"] = (hs[0][0] - hs[1][0]) / (2 * delta)
        out[f"dS_{name}"] = (hs[0][1] - hs[1][1]) / (2 * delta)
    out["seconds"] = time.perf_counter() - t0
    root.mkdir(parents=True, exist_ok=True)
    np.savez(path, **out)
    return out


def edge_keys(d: dict, radius: float) -> dict:
    """Key (class, prim i, prim j, r_i − r_0, bond vector; Å rounded to 0.01) → edge, for edges near atom 0."""
    cell = d["cell"]
    pos = d["positions"]
    inv = np.linalg.inv(cell)
    keys = {}
    for e, (i, j) in enumerate(d["edge_index"].T):
        rel = pos[i] - pos[0]
        frac = rel @ inv
        frac[:2] -= np.round(frac[:2])
        rel = frac @ cell
        if np.linalg.norm(rel) > radius:
            continue
        bond = pos[j] + d["cell_shift"][e] @ cell - pos[i]
        cls = "own" if (i == 0 or j == 0) else "near"
        keys[(cls, int(d["prim"][i]), int(d["prim"][j]), *np.round(rel, 2), *np.round(bond, 2))] = e
    return keys


def compare(d: dict, ref_d: dict, radius: float) -> dict:
    keys, ref_keys = edge_keys(d, radius), edge_keys(ref_d, radius)
    common = [k for k in ref_keys if k in keys]
    out = {"blocks_compared": len(common), "blocks_missing": len(ref_keys) - len(common)}
    for cls in ("own", "near"):
        ks = [k for k in common if k[0] == cls]
        e, e_ref = np.array([keys[k] for k in ks]), np.array([ref_keys[k] for k in ks])
        for name in DIRECTIONS:
            for q in ("dH", "dS"):
                a, b = d[f"{q}_{name}"][e], ref_d[f"{q}_{name}"][e_ref]
                if q == "dH":  # the Fermi-level gauge of each cell
                    a = a - float(d["fermi_level_eV"]) * d[f"dS_{name}"][e]
                    b = b - float(ref_d["fermi_level_eV"]) * ref_d[f"dS_{name}"][e_ref]
                nb = np.linalg.norm(b)  # 0 for dS/du of blocks without the displaced atom (S is two-centre)
                out[f"{cls}_{q}_{name}_rel_diff"] = float(np.linalg.norm(a - b) / nb) if nb > 0 else float("nan")
                out[f"{cls}_{q}_{name}_norm_ratio"] = float(np.linalg.norm(a) / nb) if nb > 0 else float("nan")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, nargs="+", default=[5, 6, 7, 8, 9])
    p.add_argument("--delta", type=float, default=0.005, help="displacement (Å)")
    p.add_argument("--block-cutoff", type=float, default=5.0, help="Å (the model's; below half the 5×5 width)")
    p.add_argument("--radius", type=float, default=3.0, help="blocks whose first atom is this close to atom 0 (Å)")
    p.add_argument("--root", type=Path, default=Path("outputs/coupling_cell_folding"))
    args = p.parse_args()
    ref = make_reference("xtb", block_cutoff=args.block_cutoff)
    data = {}
    for n in args.cells:
        data[n] = cell_derivatives(n, ref, args.delta, args.root)
        print(f"  {n}×{n}: {float(data[n]['seconds']):.0f} s", flush=True)
    n_ref = max(args.cells)
    rows, results = [], {}
    for n in args.cells:
        c = compare(data[n], data[n_ref], args.radius)
        results[n] = {**c, "fermi_level_eV": float(data[n]["fermi_level_eV"]),
                      "gap_at_gamma_eV": float(data[n]["gap_at_gamma_eV"]), "seconds": float(data[n]["seconds"])}
        for cls in ("own", "near"):
            rows.append([f"{n}×{n}", "yes" if n % 3 == 0 else "no", 1e3 * results[n]["gap_at_gamma_eV"], cls,
                         *[c[f"{cls}_{q}_{x}_{m}"] for q in ("dH", "dS") for x in DIRECTIONS
                           for m in ("rel_diff", "norm_ratio")]])
    header = ["cell", "K on Γ", "Γ gap meV", "blocks"]
    header += [f"{'d(H−E_F S)' if q == 'dH' else 'dS'}/du_{x} {'rel diff' if m == 'rel_diff' else 'ratio'}"
               for q in ("dH", "dS") for x in DIRECTIONS for m in ("rel_diff", "norm_ratio")]
    report(header, rows, f"GFN1-xTB couplings of atom 0 against the {n_ref}×{n_ref} cell (blocks within "
           f"{args.radius} Å, ± {args.delta} Å)", results, args.root / "coupling_cell_folding.json")


if __name__ == "__main__":
    main()
