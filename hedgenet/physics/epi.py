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
    return {"frequencies_THz": modes.frequencies_THz, "g_abs_meV": g_abs, "state_energies_eV": e}


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
