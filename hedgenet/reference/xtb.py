"""GFN1-xTB reference through tblite (the embedded default).

Periodic GFN1-xTB is Γ-point only. The self-consistent Hamiltonian is rebuilt as
``H = S C diag(ε) Cᵀ S`` from the orbital coefficients C and energies ε (tblite's saved
"hamiltonian-matrix" is the non-self-consistent H0 and must not be learned). The Γ-point matrices are
converted to e3nn orbital order and split into blocks H_ij(R) by the minimum-image rule
(:func:`hedgenet.orbitals.blocks.split_gamma_matrices`).
"""

from __future__ import annotations

import time

import numpy as np
from ase import Atoms
from ase.units import Bohr, Hartree, kB

from hedgenet.orbitals.blocks import split_gamma_matrices
from hedgenet.orbitals.layout import OrbitalLayout
from hedgenet.reference.base import (
    Reference,
    ReferenceError,
    ReferenceResult,
    SCFNotConvergedError,
)

# GFN1-xTB shells (angular momenta in tblite's order), checked element by element against tblite 0.8
# by probing overlaps with a hydrogen atom placed along x, y and z (see tests/test_xtb.py).
_S, _SP, _SPD, _DSP = (0,), (0, 1), (0, 1, 2), (2, 0, 1)
GFN1_SHELLS: dict[int, tuple[int, ...]] = {
    1: (0, 0),
    **{z: _SP for z in range(3, 10)},  # Li–F
    **{z: _SPD for z in (13, 14, 15, 16, 17)},  # Al–Cl
    22: _DSP,  # Ti
    **{z: _SPD for z in (31, 32, 33, 34, 35)},  # Ga–Br
    42: _DSP,  # Mo
    50: _SPD,  # Sn
    52: _SPD,  # Te
    74: _DSP,  # W
}


class XTBReference(Reference):
    """GFN1-xTB via tblite: energy (eV), analytic forces (eV/Å), SCF H and S blocks (eV)."""

    name = "xtb"
    supported_elements = frozenset(GFN1_SHELLS)

    def __init__(
        self,
        method: str = "GFN1-xTB",
        block_cutoff: float = 7.0,
        electronic_temperature_K: float = 300.0,
        accuracy: float = 1.0,
        max_iterations: int = 250,
        num_threads: int | None = None,
    ):
        super().__init__(block_cutoff=block_cutoff)
        if method != "GFN1-xTB":
            raise ValueError(
                f"reference.method={method!r} is not supported: hedgenet's orbital layouts are "
                "tabulated for GFN1-xTB only. Fix: reference.method=GFN1-xTB."
            )
        if electronic_temperature_K <= 0:
            raise ValueError(
                f"reference.electronic_temperature_K must be > 0 K, got {electronic_temperature_K}"
            )
        self.method = method
        self.electronic_temperature_K = float(electronic_temperature_K)
        self.accuracy = float(accuracy)
        self.max_iterations = int(max_iterations)
        self.num_threads = num_threads
        self._layout = OrbitalLayout(shells=dict(GFN1_SHELLS), basis_name="GFN1-xTB")

    @property
    def layout(self) -> OrbitalLayout:
        return self._layout

    def settings(self) -> dict:
        import tblite

        return {
            **super().settings(),
            "method": self.method,
            "electronic_temperature_K": self.electronic_temperature_K,
            "accuracy": self.accuracy,
            "max_iterations": self.max_iterations,
            "kpoints": "Gamma (supercell)",
            "tblite_version": getattr(tblite, "__version__", "unknown"),
            "hamiltonian": "S C diag(eps) C^T S (self-consistent)",
        }

    def _calculator(self, atoms: Atoms):
        from tblite.interface import Calculator

        periodic = np.array(atoms.pbc, dtype=bool)
        kwargs = {}
        if periodic.any():
            kwargs = {"lattice": atoms.cell.array / Bohr, "periodic": periodic}
        calc = Calculator(self.method, atoms.numbers, atoms.positions / Bohr, **kwargs)
        calc.set("verbosity", 0)
        calc.set("accuracy", self.accuracy)
        calc.set("max-iter", self.max_iterations)
        calc.set("temperature", self.electronic_temperature_K * kB / Hartree)
        calc.set("save-integrals", 1)
        return calc

    def _singlepoint(self, atoms: Atoms):
        t0 = time.perf_counter()
        try:
            res = self._calculator(atoms).singlepoint()
        except RuntimeError as err:  # tblite raises TBLiteRuntimeError(RuntimeError)
            msg = str(err)
            if "converge" in msg.lower():
                raise SCFNotConvergedError(f"GFN1-xTB SCF did not converge: {msg}") from err
            raise ReferenceError(f"GFN1-xTB failed: {msg}") from err
        return res, time.perf_counter() - t0

    def gamma_matrices(self, atoms: Atoms, res=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Self-consistent Γ-point H (eV) and S in e3nn orbital order, and the orbital energies (eV)."""
        if res is None:
            self.check_elements(atoms)
            res, _ = self._singlepoint(atoms)
        eps = np.asarray(res.get("orbital-energies")) * Hartree
        C = np.asarray(res.get("orbital-coefficients"))
        S = np.asarray(res.get("overlap-matrix"))
        n_expected = int(self.layout.orbital_offsets(atoms.numbers)[-1])
        if S.shape[0] != n_expected:
            raise ReferenceError(
                f"tblite returned {S.shape[0]} orbitals, the GFN1 layout table expects {n_expected}:"
                " the orbital table in hedgenet/reference/xtb.py is wrong for one of "
                f"{sorted(set(atoms.numbers.tolist()))}"
            )
        SC = S @ C
        H = (SC * eps) @ SC.T  # eV
        H = self.layout.to_e3nn(H, atoms.numbers, "tblite")
        S = self.layout.to_e3nn(S, atoms.numbers, "tblite")
        return 0.5 * (H + H.T), 0.5 * (S + S.T), eps

    def _compute(self, atoms: Atoms, with_blocks: bool) -> ReferenceResult:
        if with_blocks:
            self.check_cell(atoms)
        res, t_scf = self._singlepoint(atoms)
        energy = float(res.get("energy")) * Hartree
        forces = -np.asarray(res.get("gradient")) * (Hartree / Bohr)
        eps = np.asarray(res.get("orbital-energies")) * Hartree
        occ = np.asarray(res.get("orbital-occupations"))
        out = ReferenceResult(energy_eV=energy, forces_eV_per_A=forces, orbital_energies_eV=eps)
        out.fermi_level_eV = _fermi_level_from_occupations(eps, occ)
        if np.any(atoms.pbc):  # tblite's "virial" is ∂E/∂ε (checked against finite strains): W = −∂E/∂ε
            out.virial_eV = -np.asarray(res.get("virial")) * Hartree
        out.stats["time_scf_s"] = t_scf
        if with_blocks:
            H, S, _ = self.gamma_matrices(atoms, res)
            blocks, stats = split_gamma_matrices(atoms, H, S, self.layout, self.block_cutoff)
            out.blocks = blocks
            out.stats.update(stats)
        return out


def _fermi_level_from_occupations(eps: np.ndarray, occ: np.ndarray) -> float:
    """Midpoint between the highest (mostly) occupied and lowest (mostly) empty level, eV."""
    order = np.argsort(eps)
    eps, occ = eps[order], occ[order]
    n_el = occ.sum()
    homo = int(np.ceil(n_el / 2.0)) - 1  # closed shell: 2 electrons per orbital
    homo = min(max(homo, 0), len(eps) - 2)
    return float(0.5 * (eps[homo] + eps[homo + 1]))
