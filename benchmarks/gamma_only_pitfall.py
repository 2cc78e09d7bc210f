"""The Γ-only pitfall of periodic GFN1-xTB for graphene, measured (see docs/reference.md).

    .venv/bin/python benchmarks/gamma_only_pitfall.py

An n×n graphene supercell with n divisible by 3 folds the Dirac points K, K' onto Γ, the only k-point
tblite samples; the gapless states then sit exactly at the Fermi level of the supercell. For monolayer
graphene n×n (a = 2.4581 Å, the GFN1-xTB equilibrium) at several electronic temperatures we measure

* the frozen-phonon E2g frequency (THz) from the energy curvature of the Γ optical mode (sublattices moved
  ±u along x, u = 0…0.01 Å); an imaginary value (printed negative) means the lattice is unstable;
* the force constants seen by one displaced atom (0.01 Å along x), compared with the 8×8 cell at 300 K
  (largest |ΔΦ| over the atom itself and its neighbours within 3 Å, eV/Å²) — the effect on forces;
* the Fermi-level gap of the Γ-point spectrum (meV).
"""

from __future__ import annotations

import os
import sys

import numpy as np
from ase import units

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402

from hedgenet.reference import make_reference  # noqa: E402
from hedgenet.structures import build_structure, make_supercell  # noqa: E402

A = 2.4581
THZ_PER_SQRT_EV_A2_AMU = np.sqrt(units._e / units._amu) / 1e-10 / (2 * np.pi * 1e12)


def sheet(n: int):
    return make_supercell(build_structure("monolayer_graphene", a=A), [n, n])


def sublattice_sign(atoms) -> np.ndarray:
    """+1 on the sublattice of atom 0, −1 on the other (from fractional primitive-cell coordinates)."""
    prim = build_structure("monolayer_graphene", a=A).cell.array
    frac = (atoms.positions - atoms.positions[0]) @ np.linalg.inv(prim)
    same = np.all(np.abs(frac[:, :2] - np.round(frac[:, :2])) < 1e-6, axis=1)
    return np.where(same, 1.0, -1.0)


def e2g_frequency_THz(ref, atoms) -> float:
    sign = sublattice_sign(atoms)
    assert sign.sum() == 0
    us = np.array([-0.01, -0.005, 0.0, 0.005, 0.01])
    energies = []
    for u in us:
        a = atoms.copy()
        a.positions[:, 0] += sign * u
        energies.append(ref.energy(a))
    curvature = 2 * np.polyfit(us, energies, 2)[0]  # d²E/du², eV/Å²
    mass = atoms.get_masses().mean()
    w2 = curvature / (len(atoms) * mass)
    return float(np.sign(w2) * np.sqrt(abs(w2)) * THZ_PER_SQRT_EV_A2_AMU)


def force_constants(ref, atoms, u: float = 0.01) -> dict:
    """Φ_{0j,xα} = −F_jα/u for neighbours j of atom 0 (keyed by rounded relative vector)."""
    a = atoms.copy()
    a.positions[0, 0] += u
    f_plus = ref.forces(a)
    a.positions[0, 0] -= 2 * u
    f_minus = ref.forces(a)
    phi = -(f_plus - f_minus) / (2 * u)
    d = atoms.get_distances(0, range(len(atoms)), mic=True, vector=True)
    return {tuple(np.round(v, 2)): phi[j] for j, v in enumerate(d) if np.linalg.norm(v) < 3.0}


def gamma_gap_meV(ref, atoms) -> float:
    res = ref.compute(atoms, with_blocks=False)
    eps = np.sort(res.orbital_energies_eV)
    n_occ = len(atoms) * 4 // 2
    return float(1e3 * (eps[n_occ] - eps[n_occ - 1]))


def main() -> None:
    cases = [(5, 300.0), (6, 300.0), (7, 300.0), (8, 300.0), (6, 1000.0), (6, 3000.0), (9, 300.0)]
    refs = {T: make_reference("xtb", electronic_temperature_K=T, block_cutoff=3.0) for _, T in cases}
    phi_ref = force_constants(refs[300.0], sheet(8))
    rows = []
    for n, T in cases:
        atoms, ref = sheet(n), refs[T]
        phi = force_constants(ref, atoms)
        dphi = max(np.abs(phi[k] - phi_ref[k]).max() for k in phi if k in phi_ref)
        rows.append([
            f"{n}×{n}", "yes" if n % 3 == 0 else "no", T, gamma_gap_meV(ref, atoms),
            e2g_frequency_THz(ref, atoms), float(phi[(0.0, 0.0, 0.0)][0]), dphi,
        ])
        print(f"  done {n}×{n} at {T} K", file=sys.stderr, flush=True)
    print_table(
        ["cell", "K folds to Γ", "T_el K", "Γ gap at E_F meV", "E2g THz (neg = imaginary)",
         "Φ_xx self eV/Å²", "max |ΔΦ| vs 8×8 eV/Å²"],
        rows, title="Monolayer graphene, GFN1-xTB Γ-point supercells (a = 2.4581 Å)",
    )


if __name__ == "__main__":
    main()
