"""Electron–phonon couplings of the Dirac-point states from block derivatives dH_ij(R)/du_aα (eV/Å) and
dS_ij(R)/du_aα (1/Å).

The derivatives come from a calculator, ``calc.block_derivatives(atoms, delta_A, method=...)`` (finite
differences for a reference or a model, forward-mode autodiff for a model), as one
:class:`~hedgenet.orbitals.blocks.BlockDerivatives`; here they become coupling strengths |g_ν| of phonons.
"""

from __future__ import annotations

import numpy as np

from hedgenet.orbitals.blocks import BlockDerivatives


def dirac_point_couplings(deriv: BlockDerivatives, modes, cmap, e_cnp_eV: float, n_states: int = 4,
                          cutoff_frequency_THz: float = 0.1) -> dict:
    """First-order coupling strengths |g_ν| (meV) of every supercell phonon ν to the Dirac-point states.

    The states are the ``n_states`` supercell eigenstates closest to the charge-neutrality level at the
    supercell wave vector onto which the primitive K folds (in an n×n cell with n ≡ 0 mod 3 that is Γ, and
    K' folds there too, so intervalley phonons at K are included). For a mode of frequency ω_ν with
    mass-weighted eigenvector e_ν,

        g_mn^ν = ⟨ψ_m| ∂_ν H − ε_n ∂_ν S |ψ_n⟩,   ∂_ν = Σ_aα √(ħ/2ω_ν) e_{aα,ν}/√M_a ∂/∂u_aα,

    and ``g_abs_meV[ν]`` = √(Σ_mn |g_mn^ν|² / n_states), invariant under unitary mixing of the states.
    Returns frequencies (THz), |g| (meV) and the state energies (eV)."""
    from hedgenet.orbitals.bloch import bloch_matrix, generalized_eigh
    from hedgenet.physics.sampling import mode_variances
    from hedgenet.physics.unfold import primitive_kpoints_cart

    b = deriv.blocks0
    k = primitive_kpoints_cart(cmap.primitive_cell, [(1 / 3, 1 / 3, 0)])[0]
    kf = cmap.supercell_kfrac(k)
    Hk = bloch_matrix(b.H, b.edge_index, b.cell_shift, b.n_orb, kf)
    Sk = bloch_matrix(b.S, b.edge_index, b.cell_shift, b.n_orb, kf)
    eps, C = generalized_eigh(Hk, Sk)
    pick = np.sort(np.argsort(np.abs(eps - e_cnp_eV))[:n_states])
    psi, e = C[:, pick], eps[pick]
    n_atoms = deriv.dH.shape[0]
    M = np.zeros((n_atoms, 3, n_states, n_states), dtype=complex)
    for a in range(n_atoms):
        for x in range(3):
            dHk = bloch_matrix(deriv.dH[a, x], b.edge_index, b.cell_shift, b.n_orb, kf)
            dSk = bloch_matrix(deriv.dS[a, x], b.edge_index, b.cell_shift, b.n_orb, kf)
            M[a, x] = psi.conj().T @ dHk @ psi - (psi.conj().T @ dSk @ psi) * e[None, :]
    # zero-point length √(ħ/2ω) = σ_ν at T = 0 (amu^½·Å), ∂_ν = σ_ν Σ e_aα/√M_a ∂_aα
    sigma = np.sqrt(mode_variances(modes, 0.0, True, cutoff_frequency_THz))
    coef = modes.eigenvectors.reshape(n_atoms, 3, -1) / np.sqrt(modes.masses)[:, None, None] * sigma[None, None, :]
    g = np.einsum("axv,axmn->vmn", coef, M)  # eV
    g_abs = 1e3 * np.sqrt(np.sum(np.abs(g) ** 2, axis=(1, 2)) / n_states)
    return {"frequencies_THz": modes.frequencies_THz, "g_abs_meV": g_abs, "state_energies_eV": e,
            "eigenvectors": modes.eigenvectors}


def degenerate_groups(frequencies_THz, tol_THz: float = 0.05) -> list[np.ndarray]:
    """Indices of the modes in each degenerate set: sorted frequencies chained while neighbours are within
    ``tol_THz``."""
    f = np.asarray(frequencies_THz)
    order = np.argsort(f, kind="stable")
    cuts = np.flatnonzero(np.diff(f[order]) > tol_THz) + 1
    return np.split(order, cuts)


def compare_couplings(g: dict, ref: dict, threshold_meV: float, tol_THz: float = 0.05) -> dict:
    """Couplings ``g`` against a reference run's ``ref`` (same cell, same atom order), basis-independently.

    |g_ν| of one mode of a degenerate set depends on the arbitrary basis inside the set; Σ_ν∈set |g_ν|² does
    not. So each reference set G (:func:`degenerate_groups`) is given its RMS coupling ḡ_G = √(Σ_G |g_ν|²/|G|),
    and the compared run's set is the |G| modes matched to G's modes by eigenvector overlap (the assignment that
    maximises Σ |⟨e_ref|e⟩|², when both runs carry eigenvectors; else the same mode indices). Returns
    ``g_sum_ratio_to_compare`` = Σ_G |G|·ḡ_G / the reference's (the coupling sum), ``g_mae_strong_modes_meV``:
    the mean of |ḡ_G − ḡ_G,ref| over the modes of the sets with ḡ_G,ref > ``threshold_meV``, and
    ``modes_matched_by`` (``eigenvectors`` or ``mode index``)."""
    from scipy.optimize import linear_sum_assignment

    n = len(ref["g_abs_meV"])
    match = np.arange(n)
    matched_by = "mode index"
    if "eigenvectors" in g and "eigenvectors" in ref:
        overlap = np.abs(np.asarray(ref["eigenvectors"]).T @ np.asarray(g["eigenvectors"])) ** 2
        rows, cols = linear_sum_assignment(-overlap)
        match[rows] = cols
        matched_by = "eigenvectors"
    g_abs, ref_abs = np.asarray(g["g_abs_meV"]), np.asarray(ref["g_abs_meV"])
    sums, errors, weights = [0.0, 0.0], [], []
    for group in degenerate_groups(ref["frequencies_THz"], tol_THz):
        r = float(np.sqrt(np.mean(ref_abs[group] ** 2)))
        m = float(np.sqrt(np.mean(g_abs[match[group]] ** 2)))
        sums[0] += len(group) * m
        sums[1] += len(group) * r
        if r > threshold_meV:
            errors.append(abs(m - r))
            weights.append(len(group))
    return {"g_sum_ratio_to_compare": sums[0] / max(sums[1], 1e-12),
            "g_mae_strong_modes_meV": float(np.average(errors, weights=weights)) if errors else 0.0,
            "modes_matched_by": matched_by}


def dirac_couplings_of(calc, unit, supercell, delta_A: float = 0.005, fc_displacement_A: float = 0.01,
                       method: str = "finite_differences", n_states: int = 4, force_constants_supercell=None) -> dict:
    """The coupling chain for any calculator on the ``supercell`` of ``unit``: force constants (on
    ``force_constants_supercell``, mapped onto ``supercell`` by phonopy's Fourier interpolation; None: on
    ``supercell``) and normal modes, dH/du and dS/du (``calc.block_derivatives``), E_CNP and the Dirac-point |g_ν| (meV).

    Returns :func:`dirac_point_couplings`' arrays plus ``E_cnp_eV``, ``max_dH_du_eV_A`` (per atom),
    ``max_dS_du_inv_A`` and the times (s) of the phonon and derivative parts."""
    import time

    from hedgenet.physics.phonons import mapped_force_constants
    from hedgenet.physics.sampling import NormalModes
    from hedgenet.physics.unfold import SupercellMap, charge_neutrality_level
    from hedgenet.structures.supercell import supercell_atoms

    t0 = time.perf_counter()
    phonon, fc_info = mapped_force_constants(calc, unit, list(supercell), force_constants_supercell,
                                             float(fc_displacement_A))
    sc = supercell_atoms(phonon, unit)
    modes = NormalModes.from_force_constants(phonon.force_constants, sc.get_masses())
    t_ph = time.perf_counter() - t0
    t0 = time.perf_counter()
    deriv = calc.block_derivatives(sc, float(delta_A), method=str(method))
    t_epi = time.perf_counter() - t0
    cmap = SupercellMap.build(sc, unit)
    e_cnp = charge_neutrality_level(deriv.blocks0, cmap, sc.numbers)
    g = dirac_point_couplings(deriv, modes, cmap, e_cnp, int(n_states))
    return {**g, "E_cnp_eV": e_cnp, "max_dH_du_eV_A": np.abs(deriv.dH).reshape(len(sc), -1).max(axis=1),
            "max_dS_du_inv_A": float(np.abs(deriv.dS).max()), "phonons_time_s": t_ph, "epi_time_s": t_epi,
            "force_constants_supercell": fc_info["force_constants_supercell"], "phonon": phonon}
