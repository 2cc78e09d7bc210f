"""Orbital layouts and the one place where solver orbital orders become hedgenet's convention.

Convention (used by every dataset, model and physics routine in hedgenet)
-------------------------------------------------------------------------
Within one atom, orbitals are grouped in shells in the order the solver's basis lists them (for
GFN1-xTB molybdenum that is 4d, 5s, 5p; for carbon 2s, 2p). Within a shell of angular momentum l the
2l+1 real orbitals follow **e3nn's real spherical harmonics** (e3nn 0.4.x, ``o3.spherical_harmonics``),
so an orbital block ``H_ij`` of shells (l1, l2) transforms under a rotation ``R`` as
``D^{l1}(R) H_ij D^{l2}(R)^T`` with ``D = o3.Irrep(l, (-1)**l).D_from_matrix(R)``:

* l = 0: (s)
* l = 1: (p_x, p_y, p_z)                      -- e3nn's l=1 is (x, y, z), D^1(R) = R
* l = 2: (d_xz, d_xy, d_{3y^2-r^2}, d_yz, d_{z^2-x^2})  -- e3nn's polar axis for l=2 is y:
  Y_2 ∝ [√15 xz, √15 xy, √5 (y² − (x²+z²)/2), √15 yz, (√15/2)(z² − x²)]

Solvers use the textbook order (m = −l..l with z as polar axis):

* tblite (GFN1-xTB): p = (p_y, p_z, p_x), d = (d_xy, d_yz, d_z², d_xz, d_{x²−y²})
* PySCF: p = (p_x, p_y, p_z), d = (d_xy, d_yz, d_z², d_xz, d_{x²−y²})

The conversion per shell is an orthogonal matrix ``U_l`` with ``phi_e3nn = U_l phi_solver``; a matrix
``M`` in solver order becomes ``T M T^T`` with ``T`` block-diagonal over shells. ``tests/test_orbitals.py``
checks these matrices against e3nn and against rotated solver calculations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

L_LETTER = {0: "s", 1: "p", 2: "d", 3: "f"}

_SQRT3_2 = np.sqrt(3.0) / 2.0

# phi_e3nn = U @ phi_std, with phi_std = (xy, yz, z², xz, x²−y²) normalised real harmonics.
_U_D_FROM_STANDARD = np.array(
    [
        [0.0, 0.0, 0.0, 1.0, 0.0],  # xz
        [1.0, 0.0, 0.0, 0.0, 0.0],  # xy
        [0.0, 0.0, -0.5, 0.0, -_SQRT3_2],  # 3y²−r²  = −Z/2 − (√3/2) X
        [0.0, 1.0, 0.0, 0.0, 0.0],  # yz
        [0.0, 0.0, _SQRT3_2, 0.0, -0.5],  # z²−x²  = (√3/2) Z − X/2
    ]
)

# Per-convention shell transforms (phi_e3nn = U phi_solver).
_SHELL_TRANSFORMS: dict[str, dict[int, np.ndarray]] = {
    "tblite": {
        0: np.eye(1),
        1: np.eye(3)[[2, 0, 1]],  # (y, z, x) -> (x, y, z)
        2: _U_D_FROM_STANDARD,
    },
    "pyscf": {
        0: np.eye(1),
        1: np.eye(3),
        2: _U_D_FROM_STANDARD,
    },
    "e3nn": {0: np.eye(1), 1: np.eye(3), 2: np.eye(5)},
}


def shell_transform(convention: str, l: int) -> np.ndarray:
    """Orthogonal (2l+1, 2l+1) matrix taking a shell in ``convention`` order to e3nn order."""
    try:
        table = _SHELL_TRANSFORMS[convention]
    except KeyError:
        raise ValueError(
            f"unknown orbital convention {convention!r}; known: {sorted(_SHELL_TRANSFORMS)}"
        ) from None
    if l not in table:
        raise ValueError(f"orbital convention {convention!r} has no transform for l={l} yet")
    return table[l]


@dataclass(frozen=True)
class OrbitalLayout:
    """Which shells (angular momenta, in order) each element carries in a solver's basis.

    ``shells[Z]`` is a tuple of l values, e.g. ``(0, 1)`` for carbon in GFN1-xTB (2s, 2p).
    """

    shells: dict[int, tuple[int, ...]]
    basis_name: str = ""
    convention: str = "e3nn"
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    def n_orb(self, z: int) -> int:
        return sum(2 * l + 1 for l in self.shells_of(z))

    def shells_of(self, z: int) -> tuple[int, ...]:
        if z not in self.shells:
            from ase.data import chemical_symbols

            raise ValueError(
                f"element {chemical_symbols[z]} (Z={z}) has no orbital layout in basis "
                f"{self.basis_name!r}; supported elements: "
                f"{[chemical_symbols[k] for k in sorted(self.shells)]}"
            )
        return self.shells[z]

    def n_max(self, numbers) -> int:
        return max(self.n_orb(int(z)) for z in set(np.asarray(numbers).tolist()))

    def orbital_offsets(self, numbers) -> np.ndarray:
        """Start index of each atom's orbitals in the full matrix; length N+1."""
        counts = [self.n_orb(int(z)) for z in numbers]
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def atom_transform(self, z: int, source: str) -> np.ndarray:
        """Block-diagonal matrix converting one atom's orbitals from ``source`` to e3nn order."""
        key = (z, source)
        if key not in self._cache:
            from scipy.linalg import block_diag

            self._cache[key] = block_diag(*[shell_transform(source, l) for l in self.shells_of(z)])
        return self._cache[key]

    def full_transform(self, numbers, source: str) -> np.ndarray:
        """(n_orb_total, n_orb_total) orthogonal matrix taking solver order to e3nn order."""
        offsets = self.orbital_offsets(numbers)
        t = np.zeros((offsets[-1], offsets[-1]))
        for a, z in enumerate(numbers):
            s, e = offsets[a], offsets[a + 1]
            t[s:e, s:e] = self.atom_transform(int(z), source)
        return t

    def to_e3nn(self, matrix: np.ndarray, numbers, source: str) -> np.ndarray:
        """Convert a full (n, n) matrix (H or S) from ``source`` orbital order to e3nn order."""
        if source == "e3nn":
            return matrix
        t = self.full_transform(numbers, source)
        return t @ matrix @ t.T

    def orbital_mask(self, numbers) -> np.ndarray:
        """(N, n_max) bool: which of the padded orbital slots of each atom are real orbitals."""
        n_max = self.n_max(numbers)
        counts = np.array([self.n_orb(int(z)) for z in numbers])
        return np.arange(n_max)[None, :] < counts[:, None]

    def to_json(self) -> dict:
        from ase.data import chemical_symbols

        return {
            "basis_name": self.basis_name,
            "convention": "e3nn",
            "shells": {chemical_symbols[z]: [L_LETTER[l] for l in ls] for z, ls in self.shells.items()},
            "shell_l": {str(z): list(ls) for z, ls in self.shells.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> "OrbitalLayout":
        shells = {int(z): tuple(int(l) for l in ls) for z, ls in data["shell_l"].items()}
        return cls(shells=shells, basis_name=data.get("basis_name", ""))


VALENCE_ELECTRONS: dict[int, int] = {
    1: 1, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5, 8: 6, 9: 7, 13: 3, 14: 4, 15: 5, 16: 6, 17: 7, 22: 4,
    31: 3, 32: 4, 33: 5, 34: 6, 35: 7, 42: 6, 50: 4, 52: 6, 74: 6,
}
"""Valence electrons per neutral atom in the minimal valence bases used here (GFN1-xTB, GTH
pseudopotentials of the same elements): the electron count that fixes the charge-neutrality level."""


def valence_electron_count(numbers) -> int:
    """Valence electrons of the neutral structure with atomic numbers ``numbers`` (see
    :data:`VALENCE_ELECTRONS`); ValueError naming the elements without a count."""
    unknown = sorted({int(z) for z in numbers} - set(VALENCE_ELECTRONS))
    if unknown:
        raise ValueError(f"no valence electron count for Z={unknown}; add it to VALENCE_ELECTRONS")
    return int(sum(VALENCE_ELECTRONS[int(z)] for z in numbers))
