"""Low-energy bands of large cells: sparse ``H(k)``, ``S(k)`` and shift-invert Lanczos near an energy σ.

A 10⁴-atom moiré cell has 4·10⁴ orbitals; a dense generalized solve costs O(N³) time and O(N²) memory
(≈ 10¹⁴ flops, 28 GB per complex matrix) and is never attempted here. Blocks H_ij(R) within a few Å make
``H(k)`` and ``S(k)`` sparse (190 nonzeros per row for bilayer graphene at 5 Å), so the few eigenvalues nearest
an energy σ (the charge-neutrality point, where the flat bands of a twisted bilayer sit) are found by

1. one sparse factorisation ``H(k) − σ S(k) = P (L D Lᴴ) Pᵀ`` (SuperLU with a symmetric fill-reducing
   ordering and diagonal pivots, so ``U = D Lᴴ``),
2. shift-invert Lanczos/Arnoldi (ARPACK through :func:`scipy.sparse.linalg.eigsh`, ``M = S``,
   ``mode='normal'``) whose operator ``(H − σS)⁻¹ S`` applies that factorisation: the eigenvalues ε
   nearest σ become the largest |1/(ε − σ)| and converge first,
3. Sylvester's law of inertia: for S positive definite, the number of negative pivots of ``D`` is the
   number of generalized eigenvalues below σ. That gives the *global* band index of every eigenvalue
   found, so the highest occupied state is known without computing the ones below it.

The positivity of S is checked the same way up to 20 000 orbitals (no negative pivot in the factorisation
of S), by a Lanczos estimate of its lowest eigenvalue above. Bloch sums use
the one convention and index builder of :mod:`hedgenet.orbitals.bloch` (``M(k) = Σ_R e^{2πi k·R} M_ij(R)``,
k fractional in the cell's reciprocal lattice). Energies in eV.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from hedgenet.orbitals.bloch import bloch_entries
from hedgenet.orbitals.blocks import BlockSet


def sparse_bloch_matrix(blocks, edge_index, cell_shift, n_orb, kpoint_frac=(0.0, 0.0, 0.0)) -> sp.csc_matrix:
    """``M(k)`` as a CSC sparse matrix (n_orb_total, n_orb_total); the same entries as the dense
    :func:`hedgenet.orbitals.bloch.bloch_matrix` (duplicates summed), real at real phases, else complex."""
    rows, cols, vals, n = bloch_entries(blocks, edge_index, cell_shift, n_orb, kpoint_frac)
    m = sp.csc_matrix((vals, (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    return m


def sparse_bloch_pair(blocks: BlockSet, kpoint_frac=(0.0, 0.0, 0.0)) -> tuple[sp.csc_matrix, sp.csc_matrix]:
    """Sparse ``(H(k), S(k))`` (eV, dimensionless) of a :class:`BlockSet`, both symmetrised
    (``(M + Mᴴ)/2``: exact for reference blocks, removes float round-off of predicted ones)."""
    out = []
    for m in (blocks.H, blocks.S):
        mk = sparse_bloch_matrix(m, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kpoint_frac)
        out.append(((mk + mk.conj().T) * 0.5).tocsc())
    return out[0], out[1]


class SymmetricFactor:
    """Sparse ``A = P L D Lᴴ Pᵀ`` of a Hermitian (real symmetric or complex) matrix via SuperLU with a
    symmetric ordering and diagonal pivots: solves ``A x = b`` and gives the inertia (number of negative
    eigenvalues of A) from the signs of D.

    Raises ``np.linalg.LinAlgError`` for an exactly singular A (σ on an eigenvalue)."""

    def __init__(self, A: sp.spmatrix):
        from scipy.sparse.linalg import splu

        A = sp.csc_matrix(A)
        t0 = time.perf_counter()
        try:
            self.lu = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
        except RuntimeError as err:  # SuperLU: "Factor is exactly singular"
            raise np.linalg.LinAlgError(str(err)) from None
        self.seconds = time.perf_counter() - t0
        self.n = A.shape[0]
        self.fill_nnz = int(self.lu.L.nnz + self.lu.U.nnz)
        d = self.lu.U.diagonal()
        symmetric = np.array_equal(self.lu.perm_r, self.lu.perm_c)
        self.n_negative = int(np.count_nonzero(d.real < 0.0)) if symmetric else None

    def solve(self, b: np.ndarray) -> np.ndarray:
        return self.lu.solve(b)


@dataclass
class SparseBands:
    """Generalized eigenvalues of ``H(k) c = ε S(k) c`` nearest ``sigma_eV``.

    ``eigenvalues_eV`` ascending; ``first_index`` the global (0-based, ascending over the whole spectrum)
    band index of ``eigenvalues_eV[0]``, from the inertia of ``H − σS`` (None where SuperLU had to pivot
    off the diagonal, which never happened on the cells we measured); ``n_below_sigma`` likewise."""

    eigenvalues_eV: np.ndarray
    sigma_eV: float
    n_below_sigma: int | None
    first_index: int | None
    n_orbitals: int
    kpoint_frac: tuple
    timings_s: dict = field(default_factory=dict)
    fill_nnz: int = 0


#: Up to this many orbitals S(k) is checked exactly (inertia of its factorisation); above, by Lanczos.
EXACT_OVERLAP_CHECK_MAX_ORBITALS = 20_000


def _check_overlap(S: sp.spmatrix) -> float:
    """Refuse an S(k) that is not positive definite; returns the seconds spent.

    Up to :data:`EXACT_OVERLAP_CHECK_MAX_ORBITALS` orbitals: the number of negative pivots of its symmetric
    factorisation (exact, Sylvester). Above, a factorisation would cost as much as the band solve itself
    (≈ 2 min at 4·10⁴ orbitals), so the lowest eigenvalue of S is found by Lanczos instead (to 10⁻⁶
    relative; a Ritz value is an upper bound of it, so a non-positive one proves the failure)."""
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    t0 = time.perf_counter()
    n_neg = None
    if S.shape[0] <= EXACT_OVERLAP_CHECK_MAX_ORBITALS:
        try:
            n_neg = SymmetricFactor(S).n_negative
        except np.linalg.LinAlgError:
            n_neg = -1
    if n_neg is None:  # large S, or off-diagonal pivots: lowest Ritz value
        try:
            lowest = eigsh(S, k=1, which="SA", tol=1e-6, return_eigenvectors=False)[0]
        except ArpackNoConvergence as err:
            lowest = np.min(err.eigenvalues) if len(err.eigenvalues) else 1.0
        n_neg = int(lowest <= 0.0)
    if n_neg != 0:
        what = "is singular" if n_neg < 0 else f"has {n_neg} non-positive eigenvalue(s)"
        raise ValueError(
            f"the overlap matrix S(k) {what}: it is not positive definite, so H c = ε S c has no real spectrum to "
            "search. Physical overlaps always are; if S comes from a model, the model is untrained or unfit for this "
            "structure (check its S errors with hedgenet-train metrics, or use the reference)."
        )
    return time.perf_counter() - t0


def eigenvalues_near(H: sp.spmatrix, S: sp.spmatrix, sigma_eV: float, n_bands: int = 20, *,
                     kpoint_frac=(0.0, 0.0, 0.0), check_overlap: bool = True, tol: float = 0.0) -> SparseBands:
    """The ``n_bands`` generalized eigenvalues of ``H c = ε S c`` nearest ``sigma_eV`` (eV), by shift-invert
    Lanczos with one sparse factorisation of ``H − σS``; never a dense solve.

    ValueError (with the fix) for: mismatched or non-square matrices, ``n_bands`` < 1 or ≥ N − 1 (ARPACK's
    limit; use the dense :func:`hedgenet.orbitals.bloch.band_energies` then), S not positive definite, σ on
    an eigenvalue (H − σS singular)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    if H.shape != S.shape or H.shape[0] != H.shape[1]:
        raise ValueError(f"H {H.shape} and S {S.shape} must be square matrices of the same size")
    n = H.shape[0]
    if not (1 <= n_bands < n - 1):
        raise ValueError(
            f"n_bands={n_bands} must lie in [1, N − 2] = [1, {n - 2}] for this {n}-orbital matrix (ARPACK needs "
            f"k < N − 1). For {'so few orbitals' if n < 500 else 'that many bands'} use the dense "
            "hedgenet.orbitals.bloch.band_energies instead."
        )
    if not np.isfinite(sigma_eV):
        raise ValueError(f"sigma_eV must be a finite energy in eV, got {sigma_eV!r}")
    timings = {}
    if check_overlap:
        timings["overlap_check"] = _check_overlap(S)
    complex_ = np.iscomplexobj(H.data) or np.iscomplexobj(S.data)
    dtype = complex if complex_ else float
    A = (H - sigma_eV * S).astype(dtype).tocsc()
    try:
        fac = SymmetricFactor(A)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"H − σS is singular at σ = {sigma_eV:.9g} eV: σ coincides with an eigenvalue, so it lies in no gap "
            "and (H − σS)⁻¹ does not exist. Fix: move σ by a small amount (e.g. 1e-4 eV), or to the middle of "
            "the gap at the charge-neutrality point (charge_neutrality_point)."
        ) from None
    timings["factorisation"] = fac.seconds
    op = LinearOperator((n, n), matvec=fac.solve, dtype=dtype)
    t0 = time.perf_counter()
    ncv = min(n - 1, max(2 * n_bands + 1, n_bands + 20))
    # Shift-invert mode: ARPACK applies OPinv = (H − σS)⁻¹ and M = S only; eigenvalues come back as σ + 1/θ.
    w = eigsh(H.astype(dtype), k=n_bands, M=S.astype(dtype), sigma=sigma_eV, which="LM", OPinv=op,
              mode="normal", ncv=ncv, tol=tol, return_eigenvectors=False)
    timings["lanczos"] = time.perf_counter() - t0
    w = np.sort(np.real(w))
    n_below = fac.n_negative
    first = None if n_below is None else n_below - int(np.count_nonzero(w < sigma_eV))
    return SparseBands(w, float(sigma_eV), n_below, first, n, tuple(float(x) for x in kpoint_frac), timings,
                       fac.fill_nnz)


def bands_near(blocks: BlockSet, sigma_eV: float, kpoints_frac=((0.0, 0.0, 0.0),), n_bands: int = 20,
               check_overlap: bool = True) -> list[SparseBands]:
    """:func:`eigenvalues_near` at each k (fractional, the cell's reciprocal lattice) of a :class:`BlockSet`;
    the Bloch assembly time is added to each result's ``timings_s['assembly']``."""
    out = []
    for k in np.atleast_2d(np.asarray(kpoints_frac, dtype=float)):
        t0 = time.perf_counter()
        H, S = sparse_bloch_pair(blocks, k)
        t_asm = time.perf_counter() - t0
        res = eigenvalues_near(H, S, sigma_eV, n_bands, kpoint_frac=k, check_overlap=check_overlap)
        res.timings_s["assembly"] = t_asm
        out.append(res)
    return out


def charge_neutrality_point(blocks: BlockSet, numbers, sigma_guess_eV: float, kpoint_frac=(0.0, 0.0, 0.0),
                            n_bands: int = 20, max_tries: int = 12) -> tuple[float, SparseBands]:
    """Charge-neutrality level (eV) at one k of a large cell without a dense solve: the midpoint between the
    highest occupied and the lowest empty state for the neutral valence electron count (spin-degenerate
    bands, n_occ = n_electrons // 2), located by the inertia of ``H − σS`` and shift-invert Lanczos around
    ``sigma_guess_eV`` (e.g. the level of a smaller cell of the same material). σ is moved towards the
    states it misses (growing steps, then bisection of the gap bracket), at most ``max_tries`` times.

    Returns ``(E_CNP, bands)`` with ``bands`` the ``n_bands`` eigenvalues nearest the last σ; its
    ``timings_s`` are totals over every σ tried (``n_sigma`` of them) plus the Bloch assembly."""
    from hedgenet.orbitals.layout import valence_electron_count

    n_occ = valence_electron_count(numbers) // 2
    t0 = time.perf_counter()
    H, S = sparse_bloch_pair(blocks, kpoint_frac)
    totals = {"assembly": time.perf_counter() - t0}
    if n_occ < 1 or n_occ >= H.shape[0]:
        raise ValueError(f"{2 * n_occ} valence electrons fill {n_occ} of {H.shape[0]} bands: no gap to find")
    sigma, checked = float(sigma_guess_eV), False
    below, above = -np.inf, np.inf  # bracket of the gap: band n_occ − 1 lies above `below`, n_occ below `above`
    for attempt in range(max_tries):
        res = eigenvalues_near(H, S, sigma, n_bands, kpoint_frac=kpoint_frac, check_overlap=not checked)
        checked = True
        for key, sec in res.timings_s.items():
            totals[key] = totals.get(key, 0.0) + sec
        totals["n_sigma"] = attempt + 1
        res.timings_s = dict(totals)
        if res.first_index is None:
            raise ValueError("the factorisation of H − σS needed off-diagonal pivots, so its inertia (the band "
                             "index) is unknown; try another sigma_guess_eV")
        e = res.eigenvalues_eV
        lo, hi = res.first_index, res.first_index + len(e) - 1
        if lo <= n_occ - 1 and n_occ <= hi:
            return float(0.5 * (e[n_occ - 1 - lo] + e[n_occ - lo])), res
        spacing = max(np.ptp(e) / max(len(e) - 1, 1), 1e-4)  # mean level spacing in the window (eV)
        if hi < n_occ:  # every state found is occupied: the gap lies above e[-1]
            below = max(below, e[-1])
            step = max(spacing * (n_occ - hi), 0.5 * np.ptp(e)) * 2**attempt
        else:  # every state found is empty: the gap lies below e[0]
            above = min(above, e[0])
            step = -max(spacing * (lo - n_occ + 1), 0.5 * np.ptp(e)) * 2**attempt
        sigma = 0.5 * (below + above) if np.isfinite(below) and np.isfinite(above) else float(sigma + step)
    raise ValueError(
        f"the charge-neutrality gap (between bands {n_occ - 1} and {n_occ}, 0-based) was not reached from "
        f"sigma_guess_eV={sigma_guess_eV:.6g} eV in {max_tries} steps (last window: bands {lo}–{hi}). Fix: give a "
        "better guess (e.g. the level of a smaller cell of the same material) or a larger n_bands."
    )
