"""Harmonic thermal displacements of a supercell: Monte Carlo (with antithetic pairs) and the special
displacement method (Zacharias–Giustino configurations built from the phonons at the supercell's
commensurate wave vectors, :class:`CommensurateModes`, :func:`special_displacements`).

The supercell's force constants Φ (eV/Å²) give the dynamical matrix D = M^{-1/2} Φ M^{-1/2} at the
supercell's Γ point, i.e. every phonon q commensurate with the supercell. Its normal modes (ω_ν, e_ν)
give displacements u_a = Σ_ν e_{aν} Q_ν / √M_a with independent Gaussian normal coordinates of variance

* quantum:   σ_ν² = ħ / (2 ω_ν) · coth(ħω_ν / 2k_BT)   (zero-point motion at T = 0 K)
* classical: σ_ν² = k_B T / ω_ν²

in amu·Å². Modes at or below ``cutoff_frequency_THz`` (the three Γ translations, any imaginary mode, soft
modes) are not sampled. :func:`excluded_modes` lists them (frequency, wave vector, kind: acoustic, imaginary,
below cutoff) for the run's summary, and :func:`check_imaginary_modes` stops a run whose force constants
have imaginary modes beyond a threshold before anything is sampled: leaving such a mode out is not a
thermal average, it is a sign that the force constants are wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units

THZ_PER_SQRT_EV_A2_AMU = float(np.sqrt(units._e / units._amu) * 1e10 / (2 * np.pi) / 1e12)
"""ν (THz) = this × √λ for an eigenvalue λ of D in eV/(Å²·amu) (phonopy's VaspToTHz, 15.633302)."""
HBAR_EV_S = units._hbar / units._e
KB_EV_K = units.kB


@dataclass
class NormalModes:
    """Supercell normal modes: ``frequencies_THz`` (3N,) (negative: imaginary), ``eigenvectors``
    (3N, 3N) columns mass-weighted, ``masses`` (N,) amu."""

    frequencies_THz: np.ndarray
    eigenvectors: np.ndarray
    masses: np.ndarray

    @classmethod
    def from_force_constants(cls, force_constants: np.ndarray, masses) -> "NormalModes":
        fc = np.asarray(force_constants)
        n = fc.shape[0]
        m = np.repeat(np.asarray(masses, dtype=float), 3)
        phi = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
        dyn = phi / np.sqrt(np.outer(m, m))
        lam, vec = np.linalg.eigh(0.5 * (dyn + dyn.T))
        nu = np.sign(lam) * np.sqrt(np.abs(lam)) * THZ_PER_SQRT_EV_A2_AMU
        return cls(nu, vec, np.asarray(masses, dtype=float))


def mode_variances(modes: NormalModes, temperature_K: float, quantum: bool = True,
                   cutoff_frequency_THz: float = 0.1) -> np.ndarray:
    """σ_ν² (amu·Å²) of every normal coordinate at ``temperature_K``; 0 for modes below the cutoff."""
    if temperature_K < 0:
        raise ValueError(f"temperature must be ≥ 0 K, got {temperature_K} K")
    nu = modes.frequencies_THz
    keep = nu > cutoff_frequency_THz
    omega = 2 * np.pi * nu[keep] * 1e12  # rad/s
    # ħ/(2ω) in eV·s²  ->  amu·Å²  (1 eV·s² = e / amu · 1e20 amu·Å²)
    to_amu_a2 = units._e / units._amu * 1e20
    var = np.zeros_like(nu)
    if quantum:
        x = HBAR_EV_S * omega / (2 * KB_EV_K * temperature_K) if temperature_K > 0 else np.full_like(omega, np.inf)
        coth = np.where(np.isinf(x), 1.0, 1.0 / np.tanh(np.minimum(x, 700)))
        var[keep] = HBAR_EV_S / (2 * omega) * coth * to_amu_a2
    else:
        var[keep] = KB_EV_K * temperature_K / omega**2 * to_amu_a2
    return var


def _to_cartesian(modes: NormalModes, q: np.ndarray) -> np.ndarray:
    """u (..., N, 3) Å from normal coordinates q (..., 3N) amu^{1/2}·Å."""
    u = q @ modes.eigenvectors.T
    return (u.reshape(*q.shape[:-1], -1, 3)) / np.sqrt(modes.masses)[:, None]


def thermal_displacements(modes: NormalModes, temperature_K: float, n_samples: int, seed: int,
                          quantum: bool = True, antithetic: bool = True,
                          cutoff_frequency_THz: float = 0.1) -> np.ndarray:
    """Monte Carlo displacements (n_samples, N, 3) in Å from the harmonic distribution at T.

    With ``antithetic`` the samples come in ± pairs (n_samples must be even): odd-order terms of any
    observable cancel exactly within a pair, which lowers the variance of ⟨O(u)⟩."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be ≥ 1, got {n_samples}")
    if antithetic and n_samples % 2:
        raise ValueError(f"antithetic sampling needs an even number of samples, got {n_samples}. "
                         "Fix: use an even n_samples or antithetic=false")
    sigma = np.sqrt(mode_variances(modes, temperature_K, quantum, cutoff_frequency_THz))
    rng = np.random.default_rng(seed)
    n_draw = n_samples // 2 if antithetic else n_samples
    q = rng.standard_normal((n_draw, len(sigma))) * sigma
    if antithetic:
        q = np.stack([q, -q], axis=1).reshape(n_samples, len(sigma))
    return _to_cartesian(modes, q)


@dataclass
class CommensurateModes:
    """The phonons of a supercell resolved by wave vector: at every q commensurate with the supercell the
    eigenpairs of the dynamical matrix D(q) built from the supercell's own force constants, in the
    lattice-vector convention D_κα,κ'β(q) = Σ_L Φ_κ0α,κ'Lβ e^{2πi q·R_L} / √(M_κ M_κ').

    ``q_frac`` (n_q, 3) fractional wave vectors (primitive reciprocal lattice, phonopy's list), ``partner``
    (n_q,) the index of −q (itself where q ≡ −q: Γ and zone-boundary points), ``frequencies_THz`` (n_q, 3n)
    ascending (negative: imaginary), ``eigenvectors`` (n_q, 3n, 3n) complex, columns e_ν(q) normalised;
    ``lattice_frac`` (N, 3) each supercell atom's integer lattice vector, ``unit_index`` (N,) its
    primitive-cell atom κ, ``masses`` (N,) amu.

    The gauge is fixed, so that the special displacement method is deterministic: inside every set of
    degenerate bands (|Δν| < ``degeneracy_tol_THz``; a single band is a set of one) the eigenvectors are
    rotated by the unitary closest to a fixed generic reference basis R (the polar factor of E†R), which
    removes both the arbitrary mixing of degenerate partners and the arbitrary phase, and is continuous in q
    wherever E†R is not singular. e_ν(−q) = e_ν(q)* exactly; at q ≡ −q, D(q) and e_ν(q) are real."""

    q_frac: np.ndarray
    partner: np.ndarray
    frequencies_THz: np.ndarray
    eigenvectors: np.ndarray
    lattice_frac: np.ndarray
    unit_index: np.ndarray
    masses: np.ndarray

    @classmethod
    def from_force_constants(cls, force_constants: np.ndarray, masses, lattice_frac, unit_index, supercell_matrix,
                             degeneracy_tol_THz: float = 1e-4) -> CommensurateModes:
        """From supercell force constants (N, N, 3, 3) eV/Å², masses (N,) amu and the supercell's lattice
        (:func:`supercell_lattice`)."""
        fc = np.asarray(force_constants, dtype=float)
        masses = np.asarray(masses, dtype=float)
        n_atoms = len(masses)
        if fc.shape != (n_atoms, n_atoms, 3, 3):
            raise ValueError(f"force constants of shape {fc.shape}: need the full (N, N, 3, 3) of the {n_atoms} "
                             "supercell atoms")
        unit_index = np.asarray(unit_index, dtype=int)
        lattice_frac = np.asarray(lattice_frac, dtype=float)
        n_unit = int(unit_index.max()) + 1
        n_cells = n_atoms // n_unit
        if n_cells * n_unit != n_atoms or np.any(np.bincount(unit_index, minlength=n_unit) != n_cells):
            raise ValueError("every primitive-cell atom must appear once per supercell cell: "
                             f"counts {np.bincount(unit_index).tolist()} for {n_atoms} atoms")
        m = np.repeat(masses, 3)
        dyn = fc.transpose(0, 2, 1, 3).reshape(3 * n_atoms, 3 * n_atoms) / np.sqrt(np.outer(m, m))
        dyn = 0.5 * (dyn + dyn.T)
        qs = commensurate_wave_vectors(supercell_matrix)
        n_q, dim = len(qs), 3 * n_unit
        if n_q != n_cells:
            raise ValueError(f"{n_q} commensurate wave vectors for {n_cells} cells: the supercell matrix "
                             "does not match the atoms")
        partner = np.array([int(np.argmin(np.abs(_wrap(qs + q)).sum(axis=1))) for q in qs])
        col = (3 * unit_index[:, None] + np.arange(3)).ravel()
        ref = _gauge_reference(dim)
        nu = np.zeros((n_q, dim))
        vec = np.zeros((n_q, dim, dim), dtype=complex)
        done = np.zeros(n_q, dtype=bool)
        for iq in range(n_q):
            if done[iq]:
                continue
            basis = _bloch_basis(qs[iq], lattice_frac, col, dim, n_cells)
            dq = basis.conj().T @ dyn @ basis
            dq = 0.5 * (dq + dq.conj().T)
            if partner[iq] == iq:
                dq = dq.real
            lam, e = np.linalg.eigh(dq)
            f = np.sign(lam) * np.sqrt(np.abs(lam)) * THZ_PER_SQRT_EV_A2_AMU
            e = _fix_gauge(f, e, ref, degeneracy_tol_THz)
            nu[iq], vec[iq] = f, e
            nu[partner[iq]], vec[partner[iq]] = f, e.conj()
            done[iq] = done[partner[iq]] = True
        return cls(qs, partner, nu, vec, lattice_frac.astype(int), unit_index, masses)

    @classmethod
    def from_phonopy(cls, phonon, degeneracy_tol_THz: float = 1e-4) -> CommensurateModes:
        """From a phonopy object with force constants (primitive = unit cell; full or compact)."""
        fc = phonon.force_constants
        if fc.shape[0] != fc.shape[1]:
            from phonopy.harmonic.force_constants import compact_fc_to_full_fc

            fc = compact_fc_to_full_fc(phonon.primitive, fc)
        return cls.from_force_constants(fc, phonon.supercell.masses, *supercell_lattice(phonon),
                                        degeneracy_tol_THz=degeneracy_tol_THz)

    def standing_waves(self) -> tuple[NormalModes, np.ndarray]:
        """The supercell's real normal modes built from the Bloch modes, and for each a label (q index, band,
        part). A pair {q, −q} (q ≢ −q) gives two real modes of frequency ν_ν(q): √2 Re w and √2 Im w
        (part 0 and 1) with w_κL = e^{2πi q·R_L} e_κ,ν(q) / √N_cells; a q ≡ −q gives one, w itself (real,
        part 0). Together they are an orthonormal basis of the 3N mass-weighted coordinates."""
        n_cells = len(self.q_frac)
        col = (3 * self.unit_index[:, None] + np.arange(3)).ravel()
        vecs, nus, labels = [], [], []
        for iq, q in enumerate(self.q_frac):
            if self.partner[iq] < iq:
                continue
            w = _bloch_phase(q, self.lattice_frac, n_cells)[:, None] * self.eigenvectors[iq][col, :]
            bands = np.arange(w.shape[1])
            if self.partner[iq] == iq:
                parts = [(w.real, 0)]
            else:
                parts = [(np.sqrt(2) * w.real, 0), (np.sqrt(2) * w.imag, 1)]
            for v, part in parts:
                vecs.append(v)
                nus.append(self.frequencies_THz[iq])
                labels.append(np.stack([np.full_like(bands, iq), bands, np.full_like(bands, part)], axis=1))
        return (NormalModes(np.concatenate(nus), np.concatenate(vecs, axis=1), self.masses),
                np.concatenate(labels))


def _wrap(q: np.ndarray) -> np.ndarray:
    return q - np.round(q)


def _bloch_phase(q, lattice_frac, n_cells) -> np.ndarray:
    """(3N,) e^{2πi q·R_L} / √N_cells of every supercell coordinate (atom, direction)."""
    return np.repeat(np.exp(2j * np.pi * lattice_frac @ q), 3) / np.sqrt(n_cells)


def _bloch_basis(q, lattice_frac, col, dim, n_cells) -> np.ndarray:
    """(3N, 3n) orthonormal columns: the Bloch sum at q of each primitive-cell coordinate κα."""
    basis = np.zeros((len(col), dim), dtype=complex)
    basis[np.arange(len(col)), col] = _bloch_phase(q, lattice_frac, n_cells)
    return basis


def _gauge_reference(dim: int) -> np.ndarray:
    """A fixed, generic real (dim, dim) matrix whose columns are the reference directions of the gauge."""
    j, k = np.meshgrid(np.arange(1, dim + 1), np.arange(1, dim + 1), indexing="ij")
    return np.cos(j * k * 0.7548776662 + j * 0.5698402910 + k * 0.3247179572)


def _fix_gauge(nu: np.ndarray, e: np.ndarray, ref: np.ndarray, tol_THz: float) -> np.ndarray:
    """Rotate each degenerate set of eigenvectors (columns of ``e``) onto the unitary closest to the same
    columns of ``ref``: the polar factor U of E†R, E ← E U."""
    e = e.copy()
    start = 0
    for stop in range(1, len(nu) + 1):
        if stop < len(nu) and abs(nu[stop] - nu[stop - 1]) < tol_THz:
            continue
        sl = slice(start, stop)
        left, _, right = np.linalg.svd(e[:, sl].conj().T @ ref[:, sl])
        e[:, sl] = e[:, sl] @ (left @ right)
        start = stop
    return e


def msd_tensors(u: np.ndarray, unit_index) -> np.ndarray:
    """Anisotropic mean-square displacement tensors ⟨u_κ u_κᵀ⟩ (n_unit, 3, 3) Å² of displacements u
    (N, 3) Å or (n_samples, N, 3): u_i u_iᵀ averaged over the supercell copies of each primitive-cell atom κ
    (and over the samples)."""
    u = np.asarray(u, dtype=float).reshape(-1, *np.shape(u)[-2:])
    return _mean_per_unit_atom(np.einsum("sia,sib->iab", u, u) / len(u), unit_index)


def _mean_per_unit_atom(per_atom: np.ndarray, unit_index) -> np.ndarray:
    """(n_unit, ...) the average of ``per_atom`` (N, ...) over the supercell copies of each primitive-cell atom."""
    unit_index = np.asarray(unit_index, dtype=int)
    return np.stack([per_atom[unit_index == k].mean(0) for k in range(int(unit_index.max()) + 1)])


def thermal_msd_tensors(modes: NormalModes, temperature_K: float, unit_index, quantum: bool = True,
                        cutoff_frequency_THz: float = 0.1) -> np.ndarray:
    """Exact harmonic ⟨u_κ u_κᵀ⟩ (n_unit, 3, 3) Å² = Σ_ν σ_ν² e_κν e_κνᵀ / M_κ averaged over the copies of
    each primitive-cell atom κ, with the same modes left out as the samplers leave out."""
    var = mode_variances(modes, temperature_K, quantum, cutoff_frequency_THz)
    v = modes.eigenvectors.reshape(len(modes.masses), 3, -1) / np.sqrt(modes.masses)[:, None, None]
    return _mean_per_unit_atom(np.einsum("iam,ibm,m->iab", v, v, var), unit_index)


def msd_tensor_error(u: np.ndarray, exact: np.ndarray, unit_index) -> np.ndarray:
    """Relative Frobenius error ‖⟨u_κ u_κᵀ⟩ − exact_κ‖ / ‖exact_κ‖ (n_unit,) of displacements u against the
    exact tensors (:func:`thermal_msd_tensors`)."""
    diff = msd_tensors(u, unit_index) - exact
    return np.linalg.norm(diff, axis=(1, 2)) / np.linalg.norm(exact, axis=(1, 2))


def _minimise_msd_error(amplitudes: np.ndarray, signs: np.ndarray, unit_index: np.ndarray,
                        target: np.ndarray, weight: np.ndarray, max_flips: int) -> np.ndarray:
    """Steepest-descent sign flips: ``amplitudes`` (n_m, N, 3) Å the displacement of each sampled mode at
    its thermal amplitude; flip, one at a time, the sign whose flip lowers
    Σ_κ weight_κ ‖⟨u_κ u_κᵀ⟩ − target_κ‖²_F the most, until no flip lowers it."""
    signs = signs.copy()
    n_unit = len(target)
    by_atom = np.argsort(unit_index, kind="stable")  # atoms grouped by κ, the same number of copies each
    amplitudes = amplitudes[:, by_atom]
    n_m, n_atoms = amplitudes.shape[:2]

    def per_unit(x):  # (..., N, 3, 3) → average over the copies of each κ (..., n_unit, 3, 3)
        return x.reshape(*x.shape[:-3], n_unit, n_atoms // n_unit, 3, 3).mean(axis=-3)

    self_term = per_unit(amplitudes[..., :, None] * amplitudes[..., None, :])
    u = np.einsum("m,mia->ia", signs, amplitudes)
    for _ in range(max_flips):
        resid = per_unit(u[:, :, None] * u[:, None, :]) - target
        cross = per_unit(u[None, :, :, None] * amplitudes[:, :, None, :])
        change = -2 * signs[:, None, None, None] * (cross + cross.transpose(0, 1, 3, 2)) + 4 * self_term
        err_now = np.sum(weight[:, None, None] * resid**2)
        err_flip = np.einsum("k,mkab->m", weight, (resid[None] + change) ** 2)
        best = int(np.argmin(err_flip))
        if err_flip[best] >= err_now * (1 - 1e-9):
            break
        u -= 2 * signs[best] * amplitudes[best]
        signs[best] = -signs[best]
    return signs


def special_displacement(modes: CommensurateModes, temperature_K: float, quantum: bool = True,
                         cutoff_frequency_THz: float = 0.1, seed: int | None = None,
                         max_flips: int | None = None) -> np.ndarray:
    """The special displacement method's configuration (N, 3) Å (Zacharias & Giustino, PRB 94, 075125
    (2016); PRR 2, 013357 (2020)), from the gauge-fixed phonons at the supercell's commensurate wave vectors
    (:class:`CommensurateModes`):

    1. the real normal modes of the supercell are the standing waves of each pair {q, −q} (√2 Re and √2 Im
       of e^{2πiq·R} e_ν(q)) and the real modes of q ≡ −q (:meth:`CommensurateModes.standing_waves`);
    2. every mode above ``cutoff_frequency_THz`` gets its thermal amplitude, Q_m = s_m σ_m (σ_m² from
       :func:`mode_variances`), the others 0 (the modes :func:`excluded_modes` lists);
    3. the signs start as ZG's alternating sequence +, −, +, … over the modes ordered by frequency (ties:
       by q, band, part), so that the cross terms Σ_{m≠m'} s_m s_m' … of neighbouring modes cancel;
    4. then sign flips, one at a time, each the one that lowers the error of the anisotropic mean-square
       displacement tensors most, E = Σ_κ ‖⟨u_κ u_κᵀ⟩ − ⟨u_κ u_κᵀ⟩_T‖²_F / ‖⟨u_κ u_κᵀ⟩_T‖²_F (⟨·⟩ over the
       copies of each primitive-cell atom κ, :func:`msd_tensors`; exact: :func:`thermal_msd_tensors`), until
       no flip lowers E (ZG 2020's error function; at most ``max_flips``, default the number of modes).

    Deterministic; −u is as good a configuration as u. ``seed``: another configuration of the same kind: the
    starting sequence's frequency-adjacent pairs keep opposite signs but each pair's sign is drawn at random,
    then step 4.

    Only modes of the same pair {q, −q} have cross terms that survive the average over the cells, so the Γ
    modes (the same displacement in every cell) add a rank-1 term per atom that no sign choice removes: in
    AB bilayer graphene the 0.4 THz interlayer shear doublet carries most of ⟨u uᵀ⟩ at room temperature in
    a 6×6 cell and one configuration cannot reproduce the tensors there. :func:`special_displacements` gives
    sets of configurations whose pooled tensors do."""
    return _special_displacements(modes, temperature_K, [seed], quantum, cutoff_frequency_THz, max_flips)[0]


def special_displacements(modes: CommensurateModes, temperature_K: float, n_configurations: int = 2,
                          quantum: bool = True, cutoff_frequency_THz: float = 0.1, seed: int = 0,
                          max_flips: int | None = None) -> np.ndarray:
    """``n_configurations`` special displacement configurations (n, N, 3) Å, deterministic for a given
    ``seed``. The first is the ZG configuration of :func:`special_displacement` (the same for every
    ``seed``); configuration k ≥ 1 starts from the alternating sequence with random signs of the
    frequency-adjacent pairs (drawn from ``seed`` and k), and its sign flips minimise the error of the tensors
    pooled over configurations 0…k, E = Σ_κ ‖(1/(k+1)) Σ_j ⟨u_κ u_κᵀ⟩_j − ⟨u_κ u_κᵀ⟩_T‖²_F / ‖⟨u_κ u_κᵀ⟩_T‖²_F:
    the second configuration cancels what the first leaves, above all the cross terms of degenerate Γ modes
    (an even number of configurations can cancel them, an odd one cannot). Each is used with its −u; the
    spread of an observable over them is the SDM's error bar."""
    if n_configurations < 1:
        raise ValueError(f"n_configurations must be ≥ 1, got {n_configurations}")
    starts = [None] + [[seed, k] for k in range(1, n_configurations)]
    return _special_displacements(modes, temperature_K, starts, quantum, cutoff_frequency_THz, max_flips)


def _special_displacements(modes: CommensurateModes, temperature_K: float, starts: list, quantum: bool,
                           cutoff_frequency_THz: float, max_flips: int | None) -> np.ndarray:
    """One configuration per entry of ``starts`` (None: the alternating sequence; else the seed of the
    random pair signs), each minimising the error of the tensors pooled with the ones before it."""
    waves, labels = modes.standing_waves()
    sigma = np.sqrt(mode_variances(waves, temperature_K, quantum, cutoff_frequency_THz))
    order = np.lexsort((labels[:, 2], labels[:, 1], labels[:, 0], waves.frequencies_THz))
    sampled = order[sigma[order] > 0]
    n_atoms = len(modes.masses)
    if len(sampled) == 0:
        return np.zeros((len(starts), n_atoms, 3))
    amplitudes = (waves.eigenvectors[:, sampled].T * sigma[sampled][:, None]).reshape(len(sampled), n_atoms, 3)
    amplitudes /= np.sqrt(modes.masses)[None, :, None]
    exact = thermal_msd_tensors(waves, temperature_K, modes.unit_index, quantum, cutoff_frequency_THz)
    weight = 1.0 / np.sum(exact**2, axis=(1, 2))
    alternating = np.where(np.arange(len(sampled)) % 2 == 0, 1.0, -1.0)
    n_pairs = (len(sampled) + 1) // 2
    out, pooled = [], np.zeros_like(exact)
    for k, start_seed in enumerate(starts):
        start = alternating.copy()
        if start_seed is not None:
            rng = np.random.default_rng(start_seed)
            start *= np.repeat(rng.choice([-1.0, 1.0], size=n_pairs), 2)[: len(sampled)]
        target = (k + 1) * exact - pooled
        signs = _minimise_msd_error(amplitudes, start, modes.unit_index, target, weight,
                                    len(sampled) if max_flips is None else max_flips)
        u = np.einsum("m,mia->ia", signs, amplitudes)
        pooled += msd_tensors(u, modes.unit_index)
        out.append(u)
    return np.stack(out)


def mean_square_displacement(modes: NormalModes, temperature_K: float, quantum: bool = True,
                             cutoff_frequency_THz: float = 0.1) -> np.ndarray:
    """Exact harmonic ⟨u_aα²⟩ (N, 3) Å² = Σ_ν σ_ν² e_{aα,ν}² / M_a."""
    var = mode_variances(modes, temperature_K, quantum, cutoff_frequency_THz)
    e2 = modes.eigenvectors**2 @ var
    return e2.reshape(-1, 3) / modes.masses[:, None]


ACOUSTIC = "acoustic"
IMAGINARY = "imaginary"
BELOW_CUTOFF = "below cutoff"


class ImaginaryModesError(ValueError):
    """The force constants of a thermal-sampling cell have imaginary modes beyond the threshold; the message
    names the modes and the fix."""


def commensurate_wave_vectors(supercell_matrix) -> np.ndarray:
    """The phonon wave vectors q (fractional, primitive reciprocal lattice) of a supercell's Γ point, as
    phonopy lists them for ``supercell_matrix`` (3, 3)."""
    from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

    return np.asarray(get_commensurate_points(np.asarray(supercell_matrix, dtype=int)), dtype=float)


def _canonical_q(q: np.ndarray) -> np.ndarray:
    """q folded into (−½, ½] per component, and of the pair {q, −q} the one whose first nonzero component is
    positive (a real normal mode of the supercell is a standing wave of q and −q)."""
    q = np.asarray(q, dtype=float) - np.round(q)
    q[np.isclose(q, -0.5)] = 0.5
    nz = np.flatnonzero(np.abs(q) > 1e-9)
    if len(nz) and q[nz[0]] < 0:
        q = -q
        q = q - np.round(q)
        q[np.isclose(q, -0.5)] = 0.5
    return np.where(np.abs(q) < 1e-9, 0.0, q)


def excluded_modes(modes: NormalModes, cutoff_frequency_THz: float = 0.1, lattice_frac=None,
                   unit_index=None, supercell_matrix=None, acoustic_overlap: float = 0.9) -> list[dict]:
    """The normal modes the samplers leave out (ν ≤ ``cutoff_frequency_THz``), one dict each, lowest first:
    ``frequency_THz`` (negative: imaginary), ``q`` ("Γ" or the fractional wave vector of the standing wave)
    and ``kind``: ``acoustic`` (≥ ``acoustic_overlap`` of the mode is a rigid translation of the whole cell),
    ``imaginary`` (ν < 0 and not acoustic) or ``below cutoff`` (0 ≤ ν ≤ cutoff, not acoustic).

    The wave vector needs the supercell's lattice: ``lattice_frac`` (N, 3) the integer lattice vector of each
    atom's primitive cell (fractional, primitive lattice), ``unit_index`` (N,) its primitive-cell atom and
    ``supercell_matrix``; without them ``q`` is Γ for acoustic modes and None otherwise."""
    nu = modes.frequencies_THz
    masses = modes.masses
    n = len(masses)
    trans = np.zeros((3 * n, 3))
    for a in range(3):
        trans[a::3, a] = np.sqrt(masses)
    trans /= np.linalg.norm(trans, axis=0)
    qs = None
    if lattice_frac is not None:
        qs = commensurate_wave_vectors(supercell_matrix)
        phase = np.exp(-2j * np.pi * np.asarray(lattice_frac, float) @ qs.T)  # (N, n_q)
        unit_index = np.asarray(unit_index)
        n_unit = int(unit_index.max()) + 1
        n_cells = n // n_unit
    out = []
    for v in np.flatnonzero(nu <= cutoff_frequency_THz):
        e = modes.eigenvectors[:, v]
        overlap = float(np.sum((trans.T @ e) ** 2) / max(e @ e, 1e-300))
        if overlap >= acoustic_overlap:
            kind, q = ACOUSTIC, "Γ"
        else:
            kind = IMAGINARY if nu[v] < 0 else BELOW_CUTOFF
            q = None
            if qs is not None:
                ea = e.reshape(n, 3)
                weight = np.zeros(len(qs))
                for k in range(n_unit):  # |Σ_L e_{κL} e^{−2πiq·R_L}|² per primitive-cell atom κ, summed
                    sel = unit_index == k
                    weight += np.sum(np.abs(phase[sel].T @ ea[sel]) ** 2, axis=1) / n_cells
                qbest = _canonical_q(qs[int(np.argmax(weight))])
                q = "Γ" if not np.any(qbest) else [round(float(x), 6) for x in qbest]
        out.append({"frequency_THz": float(nu[v]), "q": q, "kind": kind})
    return sorted(out, key=lambda m: m["frequency_THz"])


def supercell_lattice(phonon) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a phonopy object (primitive = unit cell): each supercell atom's integer lattice vector (N, 3)
    (fractional, primitive lattice), its primitive-cell atom (N,) and the (3, 3) supercell matrix, the
    arguments :func:`excluded_modes` needs for the wave vectors."""
    sc, prim = phonon.supercell, phonon.primitive
    unit_index = np.array([sc.u2u_map[int(s)] for s in sc.s2u_map])
    frac = sc.positions @ np.linalg.inv(prim.cell)
    unit_frac = prim.scaled_positions
    lattice = np.rint(frac - unit_frac[unit_index]).astype(int)
    return lattice, unit_index, np.asarray(phonon.supercell_matrix, dtype=int)


def check_imaginary_modes(excluded: list[dict], threshold_THz: float | None = 0.1, what: str = "the sampling cell",
                          fix: str = "") -> None:
    """Raise :class:`ImaginaryModesError` when a non-acoustic excluded mode is imaginary with
    |ν| > ``threshold_THz`` (None: never; the modes are still listed by :func:`excluded_modes`): sampling without it would silently drop a degree of freedom whose harmonic
    distribution does not exist. The message names the modes (frequency, q) and ``fix``."""
    if threshold_THz is None:
        return
    bad = [m for m in excluded if m["kind"] == IMAGINARY and abs(m["frequency_THz"]) > threshold_THz]
    if not bad:
        return
    shown = ", ".join(f"{m['frequency_THz']:.3f} THz at q={m['q']}" for m in bad[:8])
    more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
    raise ImaginaryModesError(
        f"{len(bad)} imaginary non-acoustic mode(s) beyond {threshold_THz} THz in the force constants of {what}: "
        f"{shown}{more}. A thermal sample cannot include them and leaving them out is not a thermal average. "
        f"{fix or 'Fix: force constants from a cell that does not fold K onto Γ (n×n, n not a multiple of 3).'}"
    )
