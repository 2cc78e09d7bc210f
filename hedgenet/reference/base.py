"""One interface over every electronic-structure reference solver.

A reference takes an ``ase.Atoms`` (Å) and returns a :class:`ReferenceResult`: the energy (eV), forces
(eV/Å), and the Hamiltonian and overlap blocks H_ij(R), S_ij(R) within ``block_cutoff`` (Å), in hedgenet's
orbital convention (see :mod:`hedgenet.orbitals.layout`).
"""

from __future__ import annotations

import abc
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from hedgenet.orbitals.blocks import BlockSet
from hedgenet.orbitals.layout import OrbitalLayout


class ReferenceError(RuntimeError):
    """A reference calculation failed in a way that concerns only this structure (skip and record)."""


class SCFNotConvergedError(ReferenceError):
    """The self-consistent field did not converge."""


class UnsupportedElementError(ValueError):
    """The structure contains an element the reference (or its basis) does not cover."""


@dataclass
class ReferenceResult:
    energy_eV: float
    forces_eV_per_A: np.ndarray  # (N, 3)
    blocks: BlockSet | None = None
    orbital_energies_eV: np.ndarray | None = None  # Γ-point (or all k) eigenvalues, eV
    fermi_level_eV: float | None = None
    virial_eV: np.ndarray | None = None  # (3, 3) W = −∂E/∂ε (eV) of a periodic cell; None where the solver has none
    stats: dict = field(default_factory=dict)  # truncation error, timings, ...


class Reference(abc.ABC):
    """Base class: subclasses implement :meth:`_compute` and declare ``name`` and ``layout``."""

    name: str = "reference"
    #: elements (Z) the solver can treat at all
    supported_elements: frozenset[int] = frozenset()

    def __init__(self, block_cutoff: float = 7.0):
        self.block_cutoff = float(block_cutoff)

    @property
    @abc.abstractmethod
    def layout(self) -> OrbitalLayout:
        """Orbital layout (shells per element) of this solver's basis."""

    @abc.abstractmethod
    def _compute(self, atoms: Atoms, with_blocks: bool) -> ReferenceResult: ...

    def settings(self) -> dict:
        """JSON-able solver settings, recorded in every dataset (provenance) and hashed for caches."""
        return {"name": self.name, "block_cutoff_A": self.block_cutoff}

    def settings_hash(self, exclude: tuple[str, ...] = ("block_cutoff_A",)) -> str:
        s = {k: v for k, v in self.settings().items() if k not in exclude}
        return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]

    def check_elements(self, atoms: Atoms) -> None:
        bad = sorted(set(int(z) for z in atoms.numbers) - set(self.supported_elements))
        if bad:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in bad)
            raise UnsupportedElementError(
                f"reference {self.name!r} cannot treat {names}. Supported: "
                f"{', '.join(chemical_symbols[z] for z in sorted(self.supported_elements))}. "
                f"Fix: choose another material or reference (e.g. reference=xtb)."
            )

    def check_cell(self, atoms: Atoms) -> None:
        """Refuse a cell in which blocks within ``block_cutoff`` cannot be assigned unambiguously.

        Γ-point solvers need every periodic width > 2 × cutoff; k-mesh solvers override this with the
        width of their Born–von Kármán supercell."""
        from hedgenet.orbitals.blocks import check_cell_for_cutoff

        check_cell_for_cutoff(atoms, self.block_cutoff)

    def compute(self, atoms: Atoms, with_blocks: bool = True) -> ReferenceResult:
        """Energy (eV), forces (eV/Å) and, if ``with_blocks``, H/S blocks within the block cutoff."""
        self.check_elements(atoms)
        return self._compute(atoms, with_blocks)

    def energy(self, atoms: Atoms) -> float:
        return self.compute(atoms, with_blocks=False).energy_eV

    def forces(self, atoms: Atoms) -> np.ndarray:
        return self.compute(atoms, with_blocks=False).forces_eV_per_A
