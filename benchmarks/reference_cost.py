"""Reference single-point cost against atom count.

    .venv/bin/python benchmarks/reference_cost.py                 # xTB, bilayer 3×3…8×8 + twisted cells
    .venv/bin/python benchmarks/reference_cost.py --pyscf         # adds PySCF on the two smallest cells
                                                                  # (graphene and AB bilayer primitive cells,
                                                                  #  k-mesh = the config default)

xTB: GFN1-xTB single point (energy, forces and the SCF matrices; the block split is timed separately)
on AB bilayer graphene n×n supercells and commensurate twisted cells, median of ``--repeats`` runs,
with the fitted exponent t ∝ N^p. Structures are unrelaxed (a = 2.46 Å, d = 3.35 Å); cost does not
depend on those to any measurable degree. Threads: OMP_NUM_THREADS as set by the caller.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import fit_exponent, median_time, print_table  # noqa: E402

from hedgenet.reference import make_reference  # noqa: E402
from hedgenet.structures import COMMENSURATE_TWISTS, build_structure, make_supercell  # noqa: E402


def bilayer(n: int):
    return make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35, stacking="AB"), [n, n])


def twisted(name: str):
    m, k = COMMENSURATE_TWISTS[name]
    return build_structure("twisted_bilayer_graphene", m=m, n=k, a=2.46, d=3.35)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8])
    p.add_argument("--twists", nargs="+", default=["21.79deg", "13.17deg", "9.43deg", "6.01deg", "3.89deg"])
    p.add_argument("--pyscf", action="store_true", help="also time PySCF on the two smallest bilayer cells")
    p.add_argument("--pyscf-repeats", type=int, default=3)
    args = p.parse_args()

    xtb = make_reference("xtb", block_cutoff=4.0)
    cases = [(f"AB bilayer {n}×{n}", bilayer(n)) for n in args.sizes]
    cases += [(f"twisted {t} (m,n)={COMMENSURATE_TWISTS[t]}", twisted(t)) for t in args.twists]
    rows, n_at, t_med = [], [], []
    for label, atoms in cases:
        med, times = median_time(lambda a=atoms: xtb.compute(a, with_blocks=False), repeats=args.repeats)
        rows.append([label, len(atoms), med, min(times), max(times), med / len(atoms) * 1e3])
        n_at.append(len(atoms))
        t_med.append(med)
        print(f"  {label}: {len(atoms)} atoms, median {med:.3f} s", file=sys.stderr, flush=True)
    exponent = fit_exponent(n_at, t_med)
    big = [k for k, n in enumerate(n_at) if n >= 100]
    exponent_big = fit_exponent(np.array(n_at)[big], np.array(t_med)[big]) if len(big) >= 3 else float("nan")
    print_table(
        ["cell", "atoms", "median s", "min s", "max s", "ms/atom"], rows,
        title=f"GFN1-xTB (tblite) single point, median of {args.repeats}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
    )
    print(f"\nfitted exponent t ∝ N^p: p = {exponent:.2f} (all cells), p = {exponent_big:.2f} (N ≥ 100)")

    if args.pyscf:
        pyscf = make_reference("pyscf_dft")
        prow, pn, pt = [], [], []
        smallest = [
            ("monolayer graphene 1×1", build_structure("monolayer_graphene", a=2.46)),
            ("AB bilayer 1×1", bilayer(1)),
        ]
        for label, atoms in smallest:
            med, times = median_time(lambda a=atoms: pyscf.compute(a, with_blocks=True), repeats=args.pyscf_repeats)
            prow.append([label, len(atoms), str(pyscf.settings().get("kmesh")), med, min(times), max(times)])
            pn.append(len(atoms))
            pt.append(med)
            print(f"  PySCF {label}: median {med:.1f} s", file=sys.stderr, flush=True)
        print_table(
            ["cell", "atoms", "k-mesh", "median s", "min s", "max s"], prow,
            title=f"PySCF periodic DFT ({pyscf.settings().get('xc')}, {pyscf.settings().get('basis')}), "
            f"median of {args.pyscf_repeats}, energy + forces + blocks",
        )
        if len(pn) >= 2:
            print(f"\nPySCF exponent between the two cells: p = {fit_exponent(pn, pt):.2f}")


if __name__ == "__main__":
    main()
