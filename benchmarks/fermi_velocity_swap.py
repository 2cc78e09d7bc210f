"""Which part of the model's Hamiltonian moves v_F's first order away from the reference's: H₀ or dH/du?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fermi_velocity_swap.py --model <train run>/model.pt \\
        --force-constants <reference phonons run>/phonopy_params.yaml [--supercell 6] [--samples 32] [--T 0]

The first order is H(u) = H₀ + Σ dH/du·u (and S likewise). This script computes H₀, S₀ and dH/du, dS/du of the
n×n sampling cell with the reference (GFN1-xTB) and with the model, then runs the Monte Carlo of
``hedgenet-fermi-velocity`` (first order only) four times on the **same** displacement sets (the force
constants of ``--force-constants``, mapped onto the cell, and one seed), with H₀ from one side and the
couplings from the other: reference/reference, model/model, reference H₀ with the model's couplings, model H₀
with the reference's couplings. Rows that share the displacements differ by the Hamiltonian alone, so their
differences are far better resolved than their error bars (which are mostly the sampling's). Prints
v₀/v₀(static) with its error bar, and the static v₀, per combination; writes ``<root>/fermi_velocity_swap.json``.
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
from _common import reference_cell, report  # noqa: E402


class SwappedCouplings:
    """A calculator for the first order: H₀, S₀ of ``static`` with dH/du, dS/du of ``couplings`` (both
    :class:`~hedgenet.orbitals.blocks.BlockDerivatives` of the same cell), on the edges of ``static``."""

    def __init__(self, static, couplings):
        from hedgenet.orbitals.blocks import BlockDerivatives, BlockSet, blocks_on_edges

        b0 = static.blocks0
        ei, shift = b0.edge_index, b0.cell_shift
        n, _, _, m, _ = static.dH.shape
        dH = np.zeros((n, 3, b0.H.shape[0], m, m))
        dS = np.zeros_like(dH)
        mc = couplings.dH.shape[-1]
        for a in range(n):
            for x in range(3):
                other = BlockSet(couplings.blocks0.edge_index, couplings.blocks0.cell_shift, couplings.dH[a, x],
                                 couplings.dS[a, x], couplings.blocks0.n_orb)
                h, s = blocks_on_edges(other, ei, shift)
                dH[a, x][:, :mc, :mc], dS[a, x][:, :mc, :mc] = h, s
        self.deriv = BlockDerivatives(b0, dH, dS)

    def block_derivatives(self, atoms, delta_A=0.005):
        return self.deriv


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--force-constants", required=True, help="a reference phonons run's phonopy_params.yaml")
    p.add_argument("--supercell", type=int, default=6)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--T", type=float, default=0.0, help="temperature (K)")
    p.add_argument("--root", type=Path, default=Path("outputs/fermi_velocity_swap"))
    args = p.parse_args()

    from hedgenet.calculators import ModelCalculator
    from hedgenet.physics.fermi_velocity import fermi_velocity_vs_temperature, renormalization_settings

    n = args.supercell
    cfg, ref_calc, unit, phonon, sc = reference_cell(n, args.force_constants)
    settings = dataclasses.replace(renormalization_settings(cfg), force_constants_from=args.force_constants,
                                   temperatures_K=(args.T,), n_samples=args.samples, orders=("first",))
    t0 = time.perf_counter()
    d_ref = ref_calc.block_derivatives(sc, settings.epi_displacement_A)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    d_model = ModelCalculator(args.model).block_derivatives(sc, settings.epi_displacement_A)
    t_model = time.perf_counter() - t0
    print(f"dH/du: reference {t_ref:.0f} s, model {t_model:.0f} s", flush=True)
    sides = {"reference": d_ref, "model": d_model}
    rows, out = [], {}
    for h0, cpl in (("reference", "reference"), ("model", "model"), ("reference", "model"), ("model", "reference")):
        res = fermi_velocity_vs_temperature(SwappedCouplings(sides[h0], sides[cpl]), unit, settings)
        fit = res.by_temperature["first"][args.T]
        key = f"H0 {h0}, dH/du {cpl}"
        out[key] = {"ratio": fit["ratio_to_static"], "err": fit["ratio_err"],
                    "v_fixed_energy_ratio": fit.get("v_fixed_energy_ratio_to_static"),
                    "static_v0_1e5_m_s": res.static["v0_1e5_m_s"]}
        rows.append([h0, cpl, fit["ratio_to_static"], fit["ratio_err"],
                     fit.get("v_fixed_energy_ratio_to_static", float("nan")), res.static["v0_1e5_m_s"]])
        print(key, out[key], flush=True)
    report(["H₀, S₀ from", "dH/du, dS/du from", "v₀ ratio (first)", "± (sampling)", "v(E*) ratio",
            "static v₀ (1e5 m/s)"], rows,
           f"{n}×{n} AB bilayer, {args.samples} samples at {args.T:g} K, the same displacements in every row", out,
           args.root / "fermi_velocity_swap.json")


if __name__ == "__main__":
    main()
