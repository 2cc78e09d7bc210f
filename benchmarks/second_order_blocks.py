"""The first- and second-order parts of a model's Hamiltonian under thermal displacements, against the reference's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/second_order_blocks.py \\
        --model main=<train run>/model.pt [--model other=<model.pt> ...] \\
        --force-constants <reference phonons run>/phonopy_params.yaml [--supercell 6] [--pairs 3] [--T 0]

v_F(T) at order `second` uses ½[H(u) + H(−u)] − H₀, the even part of the Hamiltonian's response to a ±
pair of thermal displacements; order `first` uses the odd part ½[H(u) − H(−u)] ≈ Σ dH/du·u. This script draws
``--pairs`` ± pairs of displacements at ``--T`` from the force constants of ``--force-constants`` (mapped onto
the n×n cell, the same sampler and seed as ``hedgenet-fermi-velocity``), computes H₀, H(u), H(−u) with the
reference (GFN1-xTB) once and with every model, and compares the odd and the even parts block by block (on
the blocks both have), in the gauge the bands see: H − E₀ S with E₀ each side's charge-neutrality level.
Blocks are grouped by what they couple: on-site (dimer sites, with an atom of the other layer closer than 3.4 Å,
and the others), intralayer nearest neighbours (< 1.6 Å), other intralayer,
interlayer pairs closer than 3.4 Å (the AB dimer, which carries γ₁) and other interlayer pairs. Per group:
the relative error (Frobenius norm of model − reference over the group's blocks and samples, divided by the
reference's) of H₀, of the odd part and of the even part, the ratio of the model's even part to the
reference's, and the p_z–p_z element of the even part (rms and mean, meV). A first table splits the on-site
blocks' odd part into the s and p shells' scalars and the rest (s–p mixing and the anisotropic p–p part, zero in
GFN1-xTB), rms over the pairs, and gives the slope of the s–s odd part against the sum of the atom's
nearest-neighbour bond-length changes (eV/Å; `onsite_odd_slope_eV_A` in the JSON). Writes
``<root>/second_order_blocks.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table, reference_cell, report  # noqa: E402

GROUPS = ("on-site dimer", "on-site other", "intralayer NN", "intralayer other", "interlayer dimer", "interlayer other")
PZ = 2  # p_z in hedgenet's (e3nn) orbital order s, p_y, p_z, p_x
DIMER_A = 3.4  # Å: interlayer pairs closer than this are the AB dimer's (at the interlayer distance d ≈ 3.3 Å; the next
#                pairs are at √(d² + 1.42²) ≈ 3.6 Å)


ONSITE_PARTS = {
    "s–s": lambda b: b[:, 0, 0],
    "p–p scalar": lambda b: np.trace(b[:, 1:4, 1:4], axis1=1, axis2=2) / 3,
    "s–p and p–p anisotropic": lambda b: np.concatenate([
        b[:, 0, 1:4], b[:, 1:4, 0],
        (b[:, 1:4, 1:4] - np.trace(b[:, 1:4, 1:4], axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)).reshape(-1, 9)],
        axis=1),
}
"""The parts of a 4×4 (s, p) on-site block: the s and p shells' scalars (all GFN1-xTB's on-site blocks have) and
the rest (s–p mixing, l = 1; the traceless p–p part, l = 2), which xTB's are zero in."""


def onsite_bond_slope(sc, pairs, odd: list[dict]) -> float:
    """eV/Å: the least-squares slope of the on-site s–s odd part against the sum of the atom's nearest-neighbour
    bond-length changes, first order in u (Σ_j (u_j − u_i)·r̂_ij over neighbours closer than 1.6 Å)."""
    from ase.neighborlist import neighbor_list

    i_, j_, D = neighbor_list("ijD", sc, 1.6)
    unit = D / np.linalg.norm(D, axis=1)[:, None]
    x, y = [], []
    for u, part in zip(pairs, odd):
        stretch = np.bincount(i_, weights=np.einsum("ek,ek->e", u[j_] - u[i_], unit), minlength=len(sc))
        for key, block in part.items():
            i, j, *r = key
            if i == j and not any(r):
                x.append(stretch[i])
                y.append(block[0, 0])
    x, y = np.asarray(x), np.asarray(y)
    return float(np.dot(x, y) / np.dot(x, x))


def keyed_blocks(blocks, e0_eV: float) -> dict:
    """{(i, j, R): H − E₀ S} of a block set (eV)."""
    return {(int(i), int(j), *map(int, r)): h - e0_eV * s
            for i, j, r, h, s in zip(*blocks.edge_index, blocks.cell_shift, blocks.H, blocks.S)}


def responses(calc, sc, cmap, pairs) -> tuple[dict, list[dict], list[dict]]:
    """H₀ and, per ± pair, the odd part ½[H(u) − H(−u)] and the even part ½[H(u) + H(−u)] − H₀ (keyed blocks
    in the gauge H − E₀ S, E₀ the calculator's own charge-neutrality level of the undisplaced cell)."""
    from hedgenet.physics.unfold import charge_neutrality_level

    b0 = calc.predict_hamiltonian(sc)
    e0 = charge_neutrality_level(b0, cmap, sc.numbers)
    h0 = keyed_blocks(b0, e0)
    odd, even = [], []
    for u in pairs:
        moved = []
        for sign in (1, -1):
            atoms = sc.copy()
            atoms.positions += sign * u
            moved.append(keyed_blocks(calc.predict_hamiltonian(atoms), e0))
        keys = [k for k in h0 if k in moved[0] and k in moved[1]]
        odd.append({k: 0.5 * (moved[0][k] - moved[1][k]) for k in keys})
        even.append({k: 0.5 * (moved[0][k] + moved[1][k]) - h0[k] for k in keys})
    return h0, odd, even


def group_of(sc, layer) -> callable:
    """The block group (one of GROUPS) of an edge key (i, j, R). On-site blocks are split into the dimer sites
    (an atom of the other layer closer than 3.4 Å: the sites γ₁ couples, whose on-site energy Δ' shifts the
    split-off bands) and the others."""
    from hedgenet.graphs import neighbor_pairs

    pos, cell = sc.positions, sc.cell.array
    i_, j_, _, _ = neighbor_pairs(sc, DIMER_A)
    dimer = set(i_[layer[i_] != layer[j_]].tolist())

    def group(key):
        i, j, *r = key
        d = np.linalg.norm(pos[j] + np.asarray(r) @ cell - pos[i])
        if d < 1e-6:
            return "on-site dimer" if i in dimer else "on-site other"
        if layer[i] == layer[j]:
            return "intralayer NN" if d < 1.6 else "intralayer other"
        return "interlayer dimer" if d < DIMER_A else "interlayer other"

    return group


def compare(ref, model, group) -> dict:
    """Per group: relative errors of H₀, odd and even parts, norm ratio of the even parts, p_z–p_z statistics."""
    (h0r, oddr, evenr), (h0m, oddm, evenm) = ref, model
    keys = [k for k in h0r if k in h0m and all(k in e for e in evenr + evenm)]
    out = {}
    for g in GROUPS:
        ks = [k for k in keys if group(k) == g]
        if not ks:
            continue
        stack = lambda parts: np.stack([p[k] for p in parts for k in ks])  # noqa: E731
        n = min(h0r[ks[0]].shape[-1], h0m[ks[0]].shape[-1])
        A0, B0 = (np.stack([h[k][:n, :n] for k in ks]) for h in (h0r, h0m))
        Or, Om, Er, Em = (stack(p)[:, :n, :n] for p in (oddr, oddm, evenr, evenm))
        rel = lambda a, b: float(np.linalg.norm(b - a) / np.linalg.norm(a))  # noqa: E731
        out[g] = {"blocks": len(ks), "H0_rel_err": rel(A0, B0), "odd_rel_err": rel(Or, Om),
                  "even_rel_err": rel(Er, Em), "even_norm_ratio": float(np.linalg.norm(Em) / np.linalg.norm(Er)),
                  "odd_norm_ratio": float(np.linalg.norm(Om) / np.linalg.norm(Or))}
        if g.startswith("on-site") and n >= 4:  # xTB's on-site blocks are one number per shell (s, p)
            out[g]["odd_rms_meV"] = {part: [1e3 * float(np.sqrt(np.mean(f(x) ** 2))) for x in (Or, Om)]
                                     for part, f in ONSITE_PARTS.items()}
        if n > PZ:
            out[g].update({"pzpz_even_rms_meV": [1e3 * float(np.sqrt(np.mean(x[:, PZ, PZ] ** 2))) for x in (Er, Em)],
                           "pzpz_even_mean_meV": [1e3 * float(np.mean(x[:, PZ, PZ])) for x in (Er, Em)],
                           "pzpz_odd_rms_meV": [1e3 * float(np.sqrt(np.mean(x[:, PZ, PZ] ** 2))) for x in (Or, Om)]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="name=model.pt (repeatable)")
    p.add_argument("--force-constants", required=True, help="a reference phonons run's phonopy_params.yaml")
    p.add_argument("--supercell", type=int, default=6)
    p.add_argument("--pairs", type=int, default=3, help="± pairs of displacements")
    p.add_argument("--T", type=float, default=0.0, help="temperature (K)")
    p.add_argument("--root", type=Path, default=Path("outputs/second_order_blocks"))
    args = p.parse_args()
    models = dict(m.split("=", 1) for m in args.model)

    from hedgenet.calculators import ModelCalculator
    from hedgenet.physics.fermi_velocity import renormalization_settings, sample_displacements, temperature_seed
    from hedgenet.physics.sampling import NormalModes
    from hedgenet.physics.unfold import SupercellMap

    n = args.supercell
    cfg, ref_calc, unit, phonon, sc = reference_cell(n, args.force_constants)
    modes = NormalModes.from_force_constants(phonon.force_constants, sc.get_masses())
    settings = dataclasses.replace(renormalization_settings(cfg), n_samples=2 * args.pairs)
    pairs = sample_displacements(modes, args.T, settings, temperature_seed(settings.seed, 0))[0::2]  # v_F's first T
    cmap = SupercellMap.build(sc, unit)
    group = group_of(sc, sc.arrays["layer"])
    t0 = time.perf_counter()
    ref = responses(ref_calc, sc, cmap, pairs)
    print(f"reference: {time.perf_counter() - t0:.0f} s", flush=True)
    rows, out = [], {"supercell": n, "pairs": args.pairs, "T_K": args.T, "models": {}}
    slope_ref = onsite_bond_slope(sc, pairs, ref[1])
    onsite_rows = []
    for name, path in models.items():
        mod = responses(ModelCalculator(path), sc, cmap, pairs)
        res = compare(ref, mod, group)
        slope = onsite_bond_slope(sc, pairs, mod[1])
        out["models"][name] = {"path": str(path), "groups": res,
                               "onsite_odd_slope_eV_A": {"reference": slope_ref, "model": slope}}
        odd_parts = {part: [0.0, 0.0] for part in ONSITE_PARTS}
        for g in ("on-site dimer", "on-site other"):  # pooled over both on-site groups (rms)
            for part, (a, b) in res.get(g, {}).get("odd_rms_meV", {}).items():
                w = res[g]["blocks"]
                odd_parts[part] = [odd_parts[part][0] + w * a**2, odd_parts[part][1] + w * b**2]
        n_on = sum(res[g]["blocks"] for g in ("on-site dimer", "on-site other") if g in res)
        onsite_rows.append([name, *[f"{np.sqrt(a / n_on):.2f} / {np.sqrt(b / n_on):.2f}"
                                    for a, b in odd_parts.values()], f"{slope_ref:.3f} / {slope:.3f}"])
        for g, r in res.items():
            pz = (f"{r['pzpz_even_rms_meV'][0]:.2f} / {r['pzpz_even_rms_meV'][1]:.2f} "
                  f"({r['pzpz_even_mean_meV'][0]:+.2f} / {r['pzpz_even_mean_meV'][1]:+.2f})" if "pzpz_even_rms_meV" in r else "")
            rows.append([name, g, r["blocks"], r["H0_rel_err"], r["odd_rel_err"], r["odd_norm_ratio"],
                         r["even_rel_err"], r["even_norm_ratio"], pz])
    print_table(["model", *[f"on-site odd {part}, rms meV (ref / model)" for part in ONSITE_PARTS],
                 "on-site s–s odd per Å of nearest-neighbour bonds, eV/Å (ref / model)"], onsite_rows,
                title="the on-site blocks' first-order response by part (xTB's are one number per shell)")
    report(["model", "blocks", "n", "H₀ rel. err", "odd rel. err", "odd model/ref", "even rel. err",
            "even model/ref", "p_z–p_z even rms ref / model (mean), meV"], rows,
           f"{n}×{n} AB bilayer, {args.pairs} ± pairs at {args.T:g} K; model against the reference on the same "
           "displacements", out, args.root / "second_order_blocks.json")


if __name__ == "__main__":
    main()
