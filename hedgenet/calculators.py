"""One interface over a reference solver or a trained model: energy (eV), forces (eV/Å), H/S blocks.

Physics code (phonons, couplings, Monte Carlo) takes a :class:`BlockCalculator` and cannot tell whether
the numbers come from GFN1-xTB, DFT or a network: that is what makes "model vs direct finite
differences with the reference" the same code. Both kinds are also ASE calculators (energy, forces).
"""

from __future__ import annotations

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from hedgenet.reference.base import Reference
from hedgenet.reference.blocks import BlockSet
from hedgenet.reference.orbitals import OrbitalLayout


class BlockCalculator(Calculator):
    """ASE calculator (energy eV, forces eV/Å) that also returns orbital blocks H_ij(R), S_ij(R)."""

    implemented_properties = ["energy", "free_energy", "forces"]
    layout: OrbitalLayout
    block_cutoff: float

    def predict_hamiltonian(self, atoms: Atoms) -> BlockSet:  # pragma: no cover - abstract
        raise NotImplementedError


class ReferenceCalculator(BlockCalculator):
    """A :class:`~hedgenet.reference.base.Reference` as an ASE calculator with blocks."""

    def __init__(self, reference: Reference, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.layout = reference.layout
        self.block_cutoff = reference.block_cutoff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        res = self.reference.compute(self.atoms, with_blocks=False)
        self.results = {"energy": res.energy_eV, "free_energy": res.energy_eV, "forces": res.forces_eV_per_A}

    def predict_hamiltonian(self, atoms: Atoms) -> BlockSet:
        """H_ij(R) (eV) and S_ij(R) within the reference's block cutoff, in e3nn orbital order."""
        return self.reference.compute(atoms, with_blocks=True).blocks
