"""PySCF periodic Kohn–Sham DFT reference: the first-principles check on small cells (slow).

What is computed (units: Å, eV, eV/Å)
-------------------------------------
* Restricted Kohn–Sham DFT with k-points (``pyscf.pbc.dft.KRKS``): functional ``xc`` (PBE), GTH
  pseudopotentials ``pseudo`` (gth-pbe), Gaussian basis ``basis`` (gth-szv), plane-wave density cutoff
  ``ke_cutoff_Ry`` for the uniform integration mesh, Γ-centred Monkhorst–Pack mesh ``kmesh``
  (use [k, k, 1] for layers: the cell is 3D-periodic and the vacuum along c separates the images).
* Fermi–Dirac smearing at the electronic temperature ``smearing_K`` (PySCF ``smearing``; 0 = integer
  occupations). The energy is the Mermin free energy ``F = E − T S`` (per cell), the quantity whose
  derivative the analytic gradient is (checked against finite differences in tests/test_pyscf_dft.py).
* Optional DFT-D3 dispersion (``dispersion="d3bj"`` etc., pyscf-dispersion / s-dftd3, periodic like the
  cell). PySCF's periodic SCF ignores ``mf.disp``, so D3 energy and gradient are added here. D3 does not
  change the Kohn–Sham Hamiltonian, so the blocks are unaffected.
* The SCF runs with PySCF's MultiGrid integration (several times faster than plain FFTDF for GTH
  pseudopotentials; same mesh, energies agree with FFTDF to ~1e-7 eV); the analytic nuclear gradient
  (``pyscf.pbc.grad.krks``) is evaluated with the plain uniform-grid integration at the converged
  density, reorganised for speed (:func:`_krks_gradients`: one pass over the mesh instead of PySCF's
  3 per k-point plus one per atom and k-point; ~3× faster, identical to PySCF's own gradient to
  ~2e-10 Eh/Bohr, checked in the tests).
* PySCF and torch ship different OpenMP runtimes: see :func:`_load_pyscf` (this module imports torch
  before PySCF when it can).

Hamiltonian blocks
------------------
At every k-point of the mesh the self-consistent Kohn–Sham matrix is rebuilt as
``H(k) = S(k) C(k) diag(ε(k)) C(k)^† S(k)`` from PySCF's orbitals and orbital energies, so its generalized
eigenvalues are the reported ``orbital_energies_eV`` to machine precision. PySCF's Bloch sums are
``φ_μ^k(r) = Σ_L e^{ik·L} φ_μ(r − L)``, hence ``H(k) = Σ_R e^{ik·R} H(R)`` with ``H(R) = <0μ|H|Rν>``, the
folding convention of :meth:`hedgenet.orbitals.blocks.BlockSet.fold`. The inverse on the k-mesh gives the
matrices of the Born–von Kármán (BvK) supercell (kmesh × cell):
``H(T) = (1/N_k) Σ_k e^{−ik·T} H(k)`` = Σ_L H(T + L) over the BvK lattice L. Each primitive-cell edge
(i, j, R) within ``block_cutoff`` receives the block of T = R mod kmesh (minimum image in the BvK cell,
unique when every BvK width exceeds 2 × cutoff, otherwise :class:`CellTooSmallError`). The blocks are
in e3nn orbital order (PySCF's p = (x, y, z), d = (xy, yz, z², xz, x²−y²) converted by
:mod:`hedgenet.orbitals.layout`), eV, and exactly Hermitian (``H_ij(R) = H_ji(−R)^T``).
What the cutoff drops inside the BvK cell is measured (``stats``); blocks beyond the BvK cell are aliased
into it by the k-mesh and cannot be seen from one calculation (converge ``kmesh`` to check).
"""

from __future__ import annotations

import functools
import sys
import time
import warnings

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from ase.units import Bohr, Hartree, kB

from hedgenet.orbitals.blocks import (
    BlockSet,
    CellTooSmallError,
    block_edges,
    cell_widths,
)
from hedgenet.orbitals.layout import OrbitalLayout
from hedgenet.reference.base import (
    Reference,
    ReferenceError,
    ReferenceResult,
    SCFNotConvergedError,
    UnsupportedElementError,
)


def _load_pyscf() -> None:
    """Import PySCF's periodic modules, and so load all of their C libraries, in one go.

    Pitfall (measured: the SCF then never converges): PySCF's C libraries bring their own OpenMP
    runtime (``pyscf/lib/libgomp-*.so``) and torch another (``torch/lib/libgomp.so.1``, loaded globally).
    If some PySCF libraries are loaded before torch is imported and others after it, the process mixes
    the two runtimes and PySCF's threads race (wrong Fock matrices). Safe orders are "torch first" and
    "all of PySCF first"; this function makes one of them happen: torch is imported first when PySCF is
    not loaded yet, and every PySCF library this module uses is loaded now. ``OMP_NUM_THREADS=1`` also
    avoids the problem (slowly).
    """
    if "pyscf" not in sys.modules:
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
    import pyscf.grad.rks  # noqa: F401
    import pyscf.pbc.dft  # noqa: F401
    import pyscf.pbc.dft.multigrid  # noqa: F401
    import pyscf.pbc.grad.krks  # noqa: F401
    import pyscf.pbc.gto  # noqa: F401
    import pyscf.pbc.tools  # noqa: F401

    try:
        import pyscf.dispersion.dftd3  # noqa: F401
    except (ImportError, OSError):  # optional; a clear error is raised when D3 is requested
        pass


_load_pyscf()

#: D3 variants of pyscf-dispersion (s-dftd3); an "atm" suffix adds the three-body term.
D3_VERSIONS = ("d3bj", "d3zero", "d3bjm", "d3mbj", "d3zerom", "d3mzero", "d3op")


@functools.lru_cache(maxsize=None)
def basis_shells(basis: str, pseudo: str | None) -> dict[int, tuple[int, ...]]:
    """Angular momenta of the contracted shells, in PySCF's AO order, of every element that has both
    ``basis`` and ``pseudo`` in PySCF (Z = 1..103)."""
    from pyscf.gto.mole import format_basis
    from pyscf.pbc.gto import basis as pbc_basis
    from pyscf.pbc.gto import pseudo as pbc_pseudo

    shells: dict[int, tuple[int, ...]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "install basis-set-exchange" hints for missing elements
        for z in range(1, 104):
            sym = chemical_symbols[z]
            try:
                raw = pbc_basis.load(basis, sym)
                if pseudo:
                    pbc_pseudo.load(pseudo, sym)
            except Exception:  # BasisNotFoundError, KeyError, RuntimeError: element not covered
                continue
            if not raw:
                continue
            ls: list[int] = []
            for shell in format_basis({sym: raw})[sym]:  # PySCF sorts shells by l, as Cell.build does
                prims = [p for p in shell[1:] if isinstance(p, (list, tuple))]
                ls += [int(shell[0])] * (len(prims[0]) - 1)
            shells[z] = tuple(ls)
    return shells


class PySCFReference(Reference):
    """Periodic KS-DFT via PySCF: free energy (eV), analytic forces (eV/Å), k-mesh H(R), S(R) blocks (eV)."""

    name = "pyscf_dft"

    def __init__(
        self,
        basis: str = "gth-szv",
        pseudo: str | None = "gth-pbe",
        xc: str = "PBE",
        kmesh=(8, 8, 1),
        block_cutoff: float = 8.0,
        ke_cutoff_Ry: float = 400.0,
        smearing_K: float = 300.0,
        dispersion: str | None = "d3bj",
        conv_tol: float = 1e-9,
        max_cycles: int = 100,
        num_threads: int | None = None,
    ):
        super().__init__(block_cutoff=block_cutoff)
        kmesh = [int(k) for k in kmesh]
        if len(kmesh) != 3 or min(kmesh) < 1:
            raise ValueError(f"reference.kmesh must be 3 positive integers (e.g. [8, 8, 1]), got {kmesh}")
        if ke_cutoff_Ry <= 0:
            raise ValueError(f"reference.ke_cutoff_Ry must be > 0 Ry, got {ke_cutoff_Ry}")
        if smearing_K < 0:
            raise ValueError(f"reference.smearing_K must be ≥ 0 K (0 = no smearing), got {smearing_K}")
        if dispersion is not None:
            dispersion = str(dispersion).lower()
            if dispersion.removesuffix("atm") not in D3_VERSIONS:
                raise ValueError(
                    f"reference.dispersion={dispersion!r} is not supported; valid: null or one of "
                    f"{list(D3_VERSIONS)} (optionally with suffix 'atm' for the three-body term)"
                )
        self.basis = str(basis)
        self.pseudo = None if pseudo is None else str(pseudo)
        self.xc = str(xc)
        self.kmesh = kmesh
        self.ke_cutoff_Ry = float(ke_cutoff_Ry)
        self.smearing_K = float(smearing_K)
        self.dispersion = dispersion
        self.conv_tol = float(conv_tol)
        self.max_cycles = int(max_cycles)
        self.num_threads = num_threads
        shells = basis_shells(self.basis, self.pseudo)
        if not shells:
            raise ValueError(
                f"PySCF knows no element with basis {self.basis!r} and pseudo {self.pseudo!r}; "
                "check the names (e.g. basis=gth-szv, pseudo=gth-pbe)"
            )
        self.supported_elements = frozenset(shells)
        self._layout = OrbitalLayout(shells=dict(shells), basis_name=f"{self.basis}/{self.pseudo}")

    @property
    def layout(self) -> OrbitalLayout:
        return self._layout

    def settings(self) -> dict:
        import pyscf

        try:
            from importlib.metadata import version

            disp_version = version("pyscf-dispersion")
        except Exception:  # not installed
            disp_version = None
        return {
            **super().settings(),
            "basis": self.basis,
            "pseudo": self.pseudo,
            "xc": self.xc,
            "kmesh": list(self.kmesh),
            "kpoints": "Gamma-centred Monkhorst-Pack",
            "ke_cutoff_Ry": self.ke_cutoff_Ry,
            "smearing_K": self.smearing_K,
            "smearing_method": "fermi" if self.smearing_K > 0 else None,
            "dispersion": self.dispersion,
            "conv_tol_Ha": self.conv_tol,
            "max_cycles": self.max_cycles,
            "energy": "Mermin free energy E - TS (+ D3) per cell",
            "integration": "MultiGrid SCF, uniform-grid analytic gradients",
            "hamiltonian": "S C diag(eps) C^H S per k; H(R) = 1/Nk sum_k e^{-ik.R} H(k) on the BvK cell",
            "pyscf_version": pyscf.__version__,
            "pyscf_dispersion_version": disp_version,
        }

    # ----------------------------------------------------------------------------------------- checks
    def check_elements(self, atoms: Atoms) -> None:
        try:
            super().check_elements(atoms)
        except UnsupportedElementError as err:
            raise UnsupportedElementError(
                f"{err} (PySCF has no basis {self.basis!r} with pseudopotential {self.pseudo!r} for it; "
                "e.g. reference.basis=gth-szv-molopt-sr also covers Mo and W.)"
            ) from None

    def bvk_cell(self, atoms: Atoms) -> np.ndarray:
        """Lattice vectors (rows, Å) of the Born–von Kármán supercell kmesh × cell."""
        return atoms.cell.array * np.asarray(self.kmesh, dtype=float)[:, None]

    def check_cell(self, atoms: Atoms) -> None:
        """Refuse a k-mesh whose BvK supercell is narrower than 2 × block_cutoff (with the fix)."""
        self._check_pbc(atoms)
        widths = cell_widths(self.bvk_cell(atoms))
        narrow = [k for k in range(3) if widths[k] <= 2.0 * self.block_cutoff]
        if narrow:
            cw = cell_widths(atoms.cell.array)
            need = [max(self.kmesh[k], int(np.floor(2.0 * self.block_cutoff / cw[k])) + 1) for k in range(3)]
            axes = ", ".join(f"a{k + 1}: {self.kmesh[k]} × {cw[k]:.2f} = {widths[k]:.2f} Å" for k in narrow)
            raise CellTooSmallError(
                f"k-mesh {self.kmesh} too small for block_cutoff={self.block_cutoff:.2f} Å: the blocks "
                f"H_ij(R) come from the Born–von Kármán supercell (kmesh × cell), whose every width must "
                f"exceed 2 × cutoff = {2 * self.block_cutoff:.2f} Å, but {axes}. Fix: "
                f"reference.kmesh={need}, or a smaller reference.block_cutoff "
                f"(≤ {0.999 * widths[narrow].min() / 2:.2f} Å here), or a larger cell."
            )

    @staticmethod
    def _check_pbc(atoms: Atoms) -> None:
        if not np.all(atoms.pbc):
            raise ValueError(
                f"reference pyscf_dft needs a 3D-periodic cell (atoms.pbc all True, vacuum along the "
                f"non-periodic axis), got pbc={atoms.pbc.tolist()}. Fix: atoms.pbc = True with ≥ 15 Å vacuum."
            )

    # ------------------------------------------------------------------------------------------- SCF
    def _cell(self, atoms: Atoms):
        from pyscf.pbc import gto

        self._check_pbc(atoms)
        cell = gto.Cell()
        cell.a = atoms.cell.array
        cell.atom = [(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)]
        cell.unit = "Angstrom"
        cell.basis = self.basis
        if self.pseudo:
            cell.pseudo = self.pseudo
        cell.ke_cutoff = 0.5 * self.ke_cutoff_Ry  # Hartree
        cell.dimension = 3
        cell.verbose = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cell.build()
        return cell

    def _check_layout(self, cell, numbers) -> None:
        """PySCF's AOs must be exactly the layout's shells, atom by atom (guards the orbital tables)."""
        for ia, z in enumerate(numbers):
            b0, b1 = cell.aoslice_by_atom()[ia][:2]
            ls = tuple(l for b in range(b0, b1) for l in [cell.bas_angular(b)] * cell.bas_nctr(b))
            if ls != self.layout.shells_of(int(z)):
                raise ReferenceError(
                    f"PySCF built shells {ls} for {chemical_symbols[z]}, the layout table expects "
                    f"{self.layout.shells_of(int(z))} (hedgenet/reference/pyscf_dft.py basis_shells)"
                )

    def kpoints_frac(self) -> np.ndarray:
        """The Γ-centred k-mesh in fractional coordinates of the reciprocal lattice, (N_k, 3)."""
        n1, n2, n3 = self.kmesh
        grid = np.stack(np.meshgrid(np.arange(n1), np.arange(n2), np.arange(n3), indexing="ij"), -1)
        return grid.reshape(-1, 3) / np.asarray(self.kmesh, dtype=float)

    def run_scf(self, atoms: Atoms):
        """Converged PySCF SCF object (KRKS, MultiGrid, smearing) and its wall time (s)."""
        from pyscf import lib
        from pyscf.pbc import dft

        self.check_elements(atoms)
        if self.num_threads:
            lib.num_threads(int(self.num_threads))
        cell = self._cell(atoms)
        self._check_layout(cell, atoms.numbers)
        kpts = cell.get_abs_kpts(self.kpoints_frac())
        mf = dft.KRKS(cell, kpts, xc=self.xc).multigrid_numint()
        if self.smearing_K > 0:
            mf = mf.smearing(sigma=self.smearing_K * kB / Hartree, method="fermi")
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycles
        mf.chkfile = None
        mf.verbose = 0
        t0 = time.perf_counter()
        try:
            mf.kernel()
        except (np.linalg.LinAlgError, ArithmeticError, RuntimeError) as err:
            raise ReferenceError(f"PySCF SCF failed: {type(err).__name__}: {err}") from err
        t_scf = time.perf_counter() - t0
        if not mf.converged:
            raise SCFNotConvergedError(
                f"PySCF KRKS SCF did not converge in {self.max_cycles} cycles (conv_tol={self.conv_tol:g} Eh, "
                f"kmesh={self.kmesh}, smearing {self.smearing_K:g} K). Fix: raise reference.max_cycles or "
                "reference.smearing_K, or check the structure."
                + (
                    " (torch is loaded in this process: if it was imported after PySCF, PySCF's OpenMP "
                    "threads race; import hedgenet.reference.pyscf_dft or torch first, or set OMP_NUM_THREADS=1)"
                    if "torch" in sys.modules
                    else ""
                )
            )
        return mf, t_scf

    def _free_energy_eV(self, mf) -> float:
        e = float(mf.e_tot)
        if self.smearing_K > 0:
            e -= float(mf.sigma) * float(mf.entropy)  # Mermin free energy; entropy is per cell
        return e * Hartree

    def _dispersion(self, cell, grad: bool):
        """D3 energy (eV) and gradient (eV/Å, or None), periodic like the cell."""
        if self.dispersion is None:
            return 0.0, (np.zeros((cell.natm, 3)) if grad else None)
        try:
            from pyscf.dispersion import dftd3
        except ImportError as err:
            raise ImportError(
                "reference.dispersion needs pyscf-dispersion (pip install pyscf-dispersion), "
                "or set reference.dispersion=null"
            ) from err
        version = self.dispersion
        atm = version.endswith("atm")
        d3 = dftd3.DFTD3Dispersion(cell, self.xc, version=version.removesuffix("atm"), atm=atm)
        res = d3.get_dispersion(grad=grad)
        e = float(res["energy"]) * Hartree
        return e, (np.asarray(res["gradient"]) * (Hartree / Bohr) if grad else None)

    def energy(self, atoms: Atoms) -> float:
        """Free energy (eV) without the gradient (cheaper than :meth:`compute`)."""
        mf, _ = self.run_scf(atoms)
        return self._free_energy_eV(mf) + self._dispersion(mf.cell, grad=False)[0]

    def _forces(self, mf) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        grad = _krks_gradients(mf).kernel()  # Eh/Bohr
        return -np.asarray(grad) * (Hartree / Bohr), time.perf_counter() - t0

    # ---------------------------------------------------------------------------------- k matrices
    def kpoint_matrices(self, atoms: Atoms, mf=None):
        """Self-consistent H(k) (eV) and S(k) at every k of the mesh, PySCF orbital order.

        Returns ``(kfrac (N_k,3), H (N_k,n,n) complex, S (N_k,n,n) complex, eps (N_k,n) eV)``; the
        generalized eigenvalues of (H(k), S(k)) are ``eps[k]`` to machine precision.
        """
        if mf is None:
            mf, _ = self.run_scf(atoms)
        S = np.asarray(mf.get_ovlp())
        Hk, eps = [], []
        for k in range(len(mf.kpts)):
            C = np.asarray(mf.mo_coeff[k])
            e = np.asarray(mf.mo_energy[k]) * Hartree
            if C.shape[0] != C.shape[1]:
                raise ReferenceError(
                    f"PySCF removed linear dependencies at k-point {k} ({C.shape[1]} of {C.shape[0]} "
                    "orbitals kept): H(k) cannot be rebuilt; use a less diffuse basis"
                )
            SC = S[k] @ C
            Hk.append((SC * e) @ SC.conj().T)
            eps.append(e)
        Hk = np.asarray(Hk)
        Hk = 0.5 * (Hk + Hk.conj().transpose(0, 2, 1))
        S = 0.5 * (S + S.conj().transpose(0, 2, 1))
        return self.kpoints_frac(), Hk, S, np.asarray(eps)

    def real_space_blocks(self, atoms: Atoms, kfrac, Hk, Sk) -> tuple[BlockSet, dict]:
        """H(k), S(k) on the k-mesh (PySCF order) → BlockSet over the primitive cell (e3nn order)."""
        self.check_cell(atoms)
        numbers = atoms.numbers
        mesh = np.asarray(self.kmesh)
        nk = len(kfrac)
        T = np.stack(np.meshgrid(*[np.arange(n) for n in mesh], indexing="ij"), -1).reshape(-1, 3)
        phase = np.exp(-2j * np.pi * (T @ np.asarray(kfrac).T)) / nk  # (N_T, N_k)
        tr = self.layout.full_transform(numbers, "pyscf")
        HT = np.einsum("tk,kij->tij", phase, Hk)
        ST = np.einsum("tk,kij->tij", phase, Sk)
        imag_H, imag_S = float(np.abs(HT.imag).max()), float(np.abs(ST.imag).max())
        HT = tr @ HT.real @ tr.T
        ST = tr @ ST.real @ tr.T

        offsets = self.layout.orbital_offsets(numbers)
        n_orb = np.diff(offsets)
        n_max = int(n_orb.max())
        edge_index, cell_shift, _ = block_edges(atoms, self.block_cutoff)
        E = edge_index.shape[1]
        t_of = np.mod(cell_shift, mesh)
        t_index = (t_of[:, 0] * mesh[1] + t_of[:, 1]) * mesh[2] + t_of[:, 2]
        H = np.zeros((E, n_max, n_max))
        S = np.zeros((E, n_max, n_max))
        kept = np.zeros((len(T), len(numbers), len(numbers)), dtype=bool)
        for e in range(E):
            i, j = edge_index[:, e]
            t = t_index[e]
            si, sj = slice(offsets[i], offsets[i + 1]), slice(offsets[j], offsets[j + 1])
            H[e, : n_orb[i], : n_orb[j]] = HT[t, si, sj]
            S[e, : n_orb[i], : n_orb[j]] = ST[t, si, sj]
            kept[t, i, j] = True
        blocks = BlockSet(edge_index, cell_shift, H, S, n_orb.astype(np.int64))
        # exact Hermiticity H_ij(R) = H_ji(-R)^T (the k-mesh inverse gives it to ~1e-15 eV)
        rev = blocks.reverse_index()
        blocks.H = 0.5 * (H + np.transpose(H[rev], (0, 2, 1)))
        blocks.S = 0.5 * (S + np.transpose(S[rev], (0, 2, 1)))

        atom_of_orb = np.repeat(np.arange(len(numbers)), n_orb)
        dropped = ~kept[:, atom_of_orb][:, :, atom_of_orb]
        # the cutoff's effect on the bands: refold at every k of the mesh, compare eigenvalues
        from scipy.linalg import eigh

        eig_err = 0.0
        for k in range(nk):
            w_ref = eigh(Hk[k], Sk[k], eigvals_only=True)
            w = eigh(blocks.fold(kfrac[k], "H"), blocks.fold(kfrac[k], "S"), eigvals_only=True)
            eig_err = max(eig_err, float(np.abs(w - w_ref).max()))
        stats = {
            "block_cutoff_A": float(self.block_cutoff),
            "n_edges": int(E),
            "bvk_widths_A": [float(w) for w in cell_widths(self.bvk_cell(atoms))],
            "max_dropped_abs_H_eV": float(np.abs(HT[dropped]).max()) if dropped.any() else 0.0,
            "max_dropped_abs_S": float(np.abs(ST[dropped]).max()) if dropped.any() else 0.0,
            "max_fold_eig_error_eV": eig_err,
            "max_abs_imag_H_eV": imag_H,
            "max_abs_imag_S": imag_S,
        }
        return blocks, stats

    # -------------------------------------------------------------------------------------- compute
    def _compute(self, atoms: Atoms, with_blocks: bool) -> ReferenceResult:
        if with_blocks:
            self.check_cell(atoms)  # before the expensive part
        mf, t_scf = self.run_scf(atoms)
        e_disp, g_disp = self._dispersion(mf.cell, grad=True)
        forces, t_grad = self._forces(mf)
        forces = forces - g_disp
        energy = self._free_energy_eV(mf) + e_disp
        kfrac, Hk, Sk, eps = self.kpoint_matrices(atoms, mf)
        out = ReferenceResult(energy_eV=energy, forces_eV_per_A=forces, orbital_energies_eV=eps)
        out.fermi_level_eV = self._fermi_level_eV(eps, mf.cell.nelectron)
        out.stats.update(
            time_scf_s=t_scf,
            time_grad_s=t_grad,
            kmesh=list(self.kmesh),
            kpoints_frac=kfrac.tolist(),
            dispersion_energy_eV=e_disp,
            entropy_term_eV=(-float(mf.sigma) * float(mf.entropy) * Hartree) if self.smearing_K > 0 else 0.0,
        )
        if with_blocks:
            blocks, stats = self.real_space_blocks(atoms, kfrac, Hk, Sk)
            out.blocks = blocks
            out.stats.update(stats)
        return out

    def _fermi_level_eV(self, eps: np.ndarray, n_electrons: float) -> float:
        """Chemical potential (eV) of the Fermi–Dirac occupations (2 per orbital, k-averaged); without
        smearing the midpoint between the highest occupied and the lowest empty level."""
        e = np.sort(np.ravel(eps))
        nk = eps.shape[0]
        n_occ_total = 0.5 * n_electrons * nk  # orbitals to fill over all k
        if self.smearing_K <= 0:
            h = int(np.ceil(n_occ_total)) - 1
            return float(0.5 * (e[h] + e[min(h + 1, len(e) - 1)]))
        from scipy.optimize import brentq
        from scipy.special import expit

        kT = self.smearing_K * kB

        def excess(mu):
            return float(expit(-(e - mu) / kT).sum() - n_occ_total)

        return float(brentq(excess, e[0] - 10.0, e[-1] + 10.0, xtol=1e-12))


def _krks_gradients(mf):
    """PySCF's KRKS nuclear gradient (``pyscf.pbc.grad.krks``), reorganised for speed, same formulas.

    PySCF evaluates the orbitals on the whole uniform mesh once per k-point for each of the Hartree,
    XC and local-pseudopotential basis-derivative terms, and once more per atom *and* k-point for the
    explicit local-pseudopotential derivative. Here one pass over the mesh (orbitals with the
    derivatives GGA needs) builds the XC term exactly as PySCF's ``get_vxc`` does and adds the Hartree
    and local-pseudopotential potentials to it (``-<∇χ|v_H + v_loc|χ>``, as PySCF's ``get_j_e1`` and
    ``get_hcore`` do); the explicit term ``Σ_g ρ(g) ∂V_loc,A(g)/∂R_A`` and the Hartree potential use the
    k-averaged density on the same mesh from one MultiGrid evaluation. Agreement with PySCF's own
    gradient: ~1e-10 Eh/Bohr (tests/test_pyscf_dft.py). The MultiGrid numint of the SCF is replaced by the
    plain uniform-grid one (MultiGrid has no k-point gradient).
    """
    from pyscf.grad import rks as rks_grad
    from pyscf.pbc import tools
    from pyscf.pbc.dft import multigrid, numint
    from pyscf.pbc.grad import krks as krks_grad
    from pyscf.pbc.gto.pseudo.pp import get_alphas, get_vlocG

    mg = mf._numint if isinstance(mf._numint, multigrid.MultiGridNumInt) else None
    mf._numint = numint.KNumInt()
    mf.grids.build(with_non0tab=True)

    class _Gradients(krks_grad.Gradients):
        _explicit = None
        _rhoR = None

        def _density(self, dm):
            """k-averaged density (electrons/Bohr³) on the cell's uniform mesh."""
            if self._rhoR is None:
                cell = self.cell
                ni = mg if (mg is not None and tuple(mg.mesh) == tuple(cell.mesh)) else None
                ni = ni or multigrid.MultiGridNumInt(cell)
                self._rhoR = np.asarray(ni.get_rho(cell, dm, None, self.kpts)).reshape(-1)
            return self._rhoR

        def get_hcore(self, cell=None, kpts=None):
            """Kinetic part only; the local pseudopotential's basis derivative is in get_veff."""
            cell = self.cell if cell is None else cell
            kpts = self.kpts if kpts is None else kpts
            return np.asarray(cell.pbc_intor("int1e_ipkin", kpts=kpts))

        def hcore_generator(self, cell=None, kpts=None):
            cell = self.cell if cell is None else cell
            kpts = self.kpts if kpts is None else kpts
            h1 = self.get_hcore(cell, kpts)
            aoslices = cell.aoslice_by_atom()

            def hcore_deriv(atm_id):
                p0, p1 = aoslices[atm_id, 2:]
                out = np.zeros((3,) + h1.shape[:1] + h1.shape[2:], dtype=h1.dtype)
                for k in range(h1.shape[0]):
                    out[:, k, p0:p1] -= h1[k, :, p0:p1]
                    out[:, k, :, p0:p1] -= h1[k, :, p0:p1].transpose(0, 2, 1).conj()
                return out

            return hcore_deriv

        def get_veff(self, dm=None, kpts=None):
            """-<∇χ|v_xc + v_H + v_loc|χ> at every k (XC exactly as pyscf.pbc.grad.krks.get_vxc)."""
            mf_ = self.base
            cell = self.cell
            dm = mf_.make_rdm1() if dm is None else dm
            kpts = self.kpts if kpts is None else kpts
            dm = np.asarray(dm)
            mesh = cell.mesh
            ngrids = int(np.prod(mesh))
            weight = cell.vol / ngrids
            # Hartree (as fft_jk.get_j_e1_kpts) + local PP (as krhf.get_hcore), both × volume element
            rhoR = self._density(dm)
            vR = tools.ifft(tools.get_coulG(cell, mesh=mesh) * tools.fft(rhoR, mesh), mesh).real * weight
            vpplocG = -np.einsum("ij,ij->j", cell.get_SI(), get_vlocG(cell))
            vpplocG[0] = np.sum(get_alphas(cell))
            vR = vR + tools.ifft(vpplocG, mesh).real

            ni = mf_._numint
            grids = mf_.grids
            xctype = ni._xc_type(mf_.xc)
            make_rho, _, nao = ni._gen_rho_evaluator(cell, dm, 1)
            ao_loc = cell.ao_loc_nr()
            nk = len(kpts)
            vmat = np.zeros((3, nk, nao, nao), dtype=dm.dtype)
            ao_deriv = 2 if xctype == "GGA" else 1
            p0 = 0
            for ao_k1, ao_k2, mask, wts, _coords in ni.block_loop(
                cell, grids, nao, ao_deriv, kpts, None, self.max_memory
            ):
                p1 = p0 + len(wts)
                v = vR[p0:p1]  # Hartree + local PP (× volume element): enters like the LDA part
                if xctype == "GGA":
                    rho = make_rho(0, [a[:4] for a in ao_k2], mask, xctype)
                    wv = ni.eval_xc_eff(mf_.xc, rho, deriv=1, xctype=xctype, spin=0)[1] * wts
                    # _gga_grad_sum_ applies the LDA-like weight w twice (<∇χ|w|χ> from both of its
                    # terms), hence PySCF's factor 1/2; the local potentials go in the same way
                    wv[0] = 0.5 * (wv[0] + v)
                    for k in range(nk):
                        rks_grad._gga_grad_sum_(vmat[:, k], cell, ao_k1[k], wv, mask, ao_loc)
                elif xctype == "LDA":
                    rho = make_rho(0, [a[0] for a in ao_k2], mask, xctype)
                    wv = ni.eval_xc_eff(mf_.xc, rho, deriv=1, xctype=xctype)[1] * wts
                    w = wv[0] + v
                    for k in range(nk):
                        aow = ao_k1[k][0] * w[:, None]
                        rks_grad._d1_dot_(vmat[:, k], cell, ao_k1[k][1:4], aow, mask, ao_loc, True)
                else:
                    raise ReferenceError(f"pyscf_dft gradients support LDA and GGA functionals, not {mf_.xc!r}")
                p0 = p1
            if p0 != ngrids:
                raise ReferenceError(f"gradient grid has {p0} points, the mesh {ngrids}")
            return -vmat

        def _explicit_vloc(self, dm):
            cell = self.cell
            rho = self._density(np.asarray(dm))
            SI = cell.get_SI()
            vlocG = get_vlocG(cell)
            Gv = cell.Gv
            out = np.zeros((cell.natm, 3))
            for a in range(cell.natm):
                for x in range(3):
                    v = tools.ifft(1j * Gv[:, x] * SI[a] * vlocG[a], cell.mesh).real
                    out[a, x] = v @ rho
            return out

        def extra_force(self, atom_id, envs):
            if self._explicit is None:
                self._explicit = self._explicit_vloc(envs["dm0"])
            return super().extra_force(atom_id, envs) + self._explicit[atom_id]

    if not mf.cell._pseudo:
        raise ReferenceError("pyscf_dft gradients need GTH pseudopotentials (reference.pseudo)")
    g = _Gradients(mf)
    g.verbose = 0
    return g
