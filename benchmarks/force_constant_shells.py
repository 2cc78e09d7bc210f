"""Where a model's force constants differ from the reference's: shell by shell of pair distance.

Two ``hedgenet-phonons`` runs on the same supercell (one with the model, one with the reference) hold the force
constants Φ_ij (eV/Å²) in ``phonons.npz``; pairs are grouped by distance (minimum image, to 0.01 Å) and by whether
the two atoms share a layer. Per shell the table gives the reference's mean in-plane trace (Φ_xx + Φ_yy) and
Φ_zz, the model's error in both, and the shell's share of the on-site error (error × pairs per atom: the
acoustic sum rule makes the on-site constant minus the sum over all shells, so these add up to it).

    python benchmarks/force_constant_shells.py --model <model phonons run> --reference <reference phonons run> \\
        [--max-distance 9]

Prints the table and the summed |error| × pairs per atom inside and beyond each ``--ranges`` distance (Å): how much
of the error lies beyond the reach of a model's cutoffs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import print_table  # noqa: E402


def load_run(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Φ (N, N, 3, 3) eV/Å², positions (N, 3) Å and cell (3, 3) Å of a hedgenet-phonons run."""
    import phonopy

    fc = np.load(run / "phonons.npz")["force_constants_eV_A2"]
    supercell = phonopy.load(run / "phonopy_params.yaml", produce_fc=False).supercell
    return fc, supercell.positions, supercell.cell


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="hedgenet-phonons run of the model")
    p.add_argument("--reference", type=Path, required=True, help="hedgenet-phonons run of the reference, same cell")
    p.add_argument("--max-distance", type=float, default=9.0, help="Å: the last shell listed")
    p.add_argument("--ranges", type=float, nargs="+", default=[4.0, 6.0, 8.0],
                   help="Å: report the error inside and beyond these distances")
    args = p.parse_args()
    ref, pos, cell = load_run(args.reference)
    model, pos_m, _ = load_run(args.model)
    if model.shape != ref.shape or not np.allclose(pos, pos_m, atol=1e-3):
        raise SystemExit("the two runs are not on the same supercell and structure: run both with the same "
                         "phonons.supercell and material")
    n = len(pos)
    d = pos[None] - pos[:, None]
    frac = d @ np.linalg.inv(cell)
    frac -= np.round(frac)
    r = np.round(np.linalg.norm(frac @ cell, axis=-1), 2)
    z = pos[:, 2]
    layer = (z > 0.5 * (z.min() + z.max())).astype(int)  # bilayers: below / above the midplane
    same = layer[:, None] == layer[None, :]

    def inplane(f):
        return f[..., 0, 0] + f[..., 1, 1]

    rows, beyond = [], {x: [0.0, 0.0] for x in args.ranges}
    for dist in np.unique(r):
        if dist > args.max_distance:
            break
        for s in (True, False):
            sel = (r == dist) & (same == s)
            if not sel.any():
                continue
            per_atom = sel.sum() / n
            a, b = ref[sel], model[sel]
            err_ip, err_zz = inplane(b).mean() - inplane(a).mean(), b[:, 2, 2].mean() - a[:, 2, 2].mean()
            rows.append([f"{dist:.2f}", "same" if s else "other", per_atom, inplane(a).mean(), a[:, 2, 2].mean(),
                         err_ip, err_zz, err_ip * per_atom if dist > 0 else err_ip])
            if dist > 0:
                size = np.abs(b - a).sum(axis=(-1, -2)).mean() * per_atom  # Σ|ΔΦ_ab| per atom
                for x in args.ranges:
                    beyond[x][int(dist > x)] += size
    print_table(["r (Å)", "layer", "pairs per atom", "ref Φxx+Φyy", "ref Φzz", "model − ref (xx+yy)",
                 "model − ref (zz)", "× pairs per atom"], rows,
                title=f"force constants by shell (eV/Å²): {args.model} against {args.reference}")
    print_table(["distance (Å)", "Σ|ΔΦ| per atom inside", "beyond", "share beyond"],
                [[x, v[0], v[1], v[1] / max(v[0] + v[1], 1e-300)] for x, v in beyond.items()],
                title="where the error lies (off-site pairs, Σ over the 9 components)")


if __name__ == "__main__":
    main()
