"""Error of truncating H_ij(R), S_ij(R) at the block cutoff, against the cutoff (Å).

    .venv/bin/python benchmarks/block_truncation.py [--n 7]

One GFN1-xTB SCF of a rattled (0.03 Å) n×n AB bilayer graphene supercell; its Γ-point H and S are split
at each cutoff, and we report the largest dropped |H| (meV) and |S|, and the largest error of the
generalized eigenvalues of the refolded (H, S) against the solver's orbital energies (meV), over all
states and within ±2 eV of the Fermi level. Cutoffs must stay below half the cell width.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402

from hedgenet.orbitals.blocks import (  # noqa: E402
    cell_widths,
    eigen_error_of_truncation,
    split_gamma_matrices,
)
from hedgenet.reference import make_reference  # noqa: E402
from hedgenet.structures import build_structure, make_supercell  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=7)
    p.add_argument("--cutoffs", type=float, nargs="+", default=[3.0, 4.0, 5.0, 6.0, 7.0])
    args = p.parse_args()
    atoms = make_supercell(build_structure("bilayer_graphene", a=2.4581, d=3.3225, stacking="AB"), [args.n] * 2)
    atoms.rattle(0.03, seed=1)
    ref = make_reference("xtb", block_cutoff=min(args.cutoffs))
    res = ref.compute(atoms, with_blocks=False)
    H, S, eps = ref.gamma_matrices(atoms)
    ef = res.fermi_level_eV
    width = min(cell_widths(atoms.cell.array)[:2])
    rows = []
    for rc in args.cutoffs:
        if 2 * rc >= width:
            print(f"skip cutoff {rc} Å: cell width {width:.2f} Å < 2 × cutoff", file=sys.stderr)
            continue
        blocks, stats = split_gamma_matrices(atoms, H, S, ref.layout, rc)
        rows.append([
            rc, blocks.n_edges / len(atoms), 1e3 * stats["max_dropped_abs_H_eV"], stats["max_dropped_abs_S"],
            1e3 * eigen_error_of_truncation(blocks, eps),
            1e3 * eigen_error_of_truncation(blocks, eps, (ef - 2.0, ef + 2.0)),
        ])
    print_table(
        ["cutoff Å", "blocks/atom", "max dropped |H| meV", "max dropped |S|", "max eig err meV",
         "eig err ±2 eV of E_F, meV"],
        rows, title=f"AB bilayer graphene {args.n}×{args.n} ({len(atoms)} atoms, width {width:.2f} Å), GFN1-xTB",
    )


if __name__ == "__main__":
    main()
