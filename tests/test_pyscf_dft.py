"""PySCF periodic DFT reference: orbital convention, exact Hermiticity, k-mesh → H(R) (against direct
real-space overlaps and PySCF's own H(k)), forces against finite differences, and the π hopping against
GFN1-xTB. The DFT runs are marked slow (deselect them with ``-m "not slow"``)."""

from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from scipy.linalg import eigh

from hedgenet.orbitals.layout import shell_transform
from hedgenet.reference import (
    CellTooSmallError,
    UnsupportedElementError,
    make_reference,
)
from hedgenet.structures import build_structure

# imported before anything else of PySCF: it fixes the torch/PySCF OpenMP load order (see _load_pyscf)
pytest.importorskip("hedgenet.reference.pyscf_dft", exc_type=ImportError)
from hedgenet.reference.pyscf_dft import PySCFReference, _krks_gradients, basis_shells  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
P_Z = 3  # carbon in gth-szv: (s, p) -> e3nn order s, p_x, p_y, p_z
S = 0


def _bond_lengths(atoms, blocks):
    """|r_j + R·cell − r_i| (Å) of every edge."""
    i, j = blocks.edge_index
    d = atoms.positions[j] + blocks.cell_shift @ atoms.cell.array - atoms.positions[i]
    return np.linalg.norm(d, axis=1)


# ----------------------------------------------------------------------------------------- fast tests
def test_pyscf_orbital_order_maps_onto_e3nn_harmonics():
    """PySCF's real p and d orbitals, evaluated on a sphere, become e3nn's harmonics after the "pyscf"
    shell transform (up to one positive radial factor per shell)."""
    pytest.importorskip("e3nn")
    import mace  # noqa: F401  (import order: STACK.md pitfall 2)
    import torch
    from e3nn import o3
    from pyscf import gto

    mol = gto.M(atom="Ne 0 0 0", basis={"Ne": [[1, [0.7, 1.0]], [2, [0.7, 1.0]]]}, verbose=0)
    labels = [lab.split()[-1] for lab in mol.ao_labels()]
    assert labels == ["2px", "2py", "2pz", "3dxy", "3dyz", "3dz^2", "3dxz", "3dx2-y2"], labels
    v = np.random.default_rng(1).normal(size=(40, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ao = mol.eval_gto("GTOval_sph", 1.3 * v)  # (40, 8) on a sphere of radius 1.3 Bohr
    for l, cols in ((1, slice(0, 3)), (2, slice(3, 8))):
        e3 = ao[:, cols] @ shell_transform("pyscf", l).T
        y = o3.spherical_harmonics(l, torch.tensor(v), True, normalization="component").numpy()
        c = float((e3 * y).sum() / (y * y).sum())
        assert c > 0
        np.testing.assert_allclose(e3, c * y, atol=1e-12 * abs(c) + 1e-14)


def test_layout_follows_pyscf_ao_order_with_several_contractions():
    """Shell tables come from PySCF's basis (sorted by l, contractions expanded) and match the AOs that
    PySCF builds (gth-dzvp carbon: 2s 3s 2p 3p 3d)."""
    from pyscf.pbc import gto

    assert basis_shells("gth-szv", "gth-pbe")[6] == (0, 1)
    shells = basis_shells("gth-dzvp", "gth-pbe")[6]
    assert shells == (0, 0, 1, 1, 2)
    cell = gto.M(a=np.eye(3) * 6.0, atom="C 0 0 0", basis="gth-dzvp", pseudo="gth-pbe", verbose=0)
    ls = []
    for lab in cell.ao_labels(fmt=False):
        ls.append("spd".index(lab[2][1]))
    expected = [l for l in shells for _ in range(2 * l + 1)]
    assert ls == expected


def test_unknown_element_is_refused_with_its_name():
    ref = PySCFReference()
    assert {1, 5, 6, 7, 16} <= ref.supported_elements and 42 not in ref.supported_elements
    at = Atoms("MoS2", positions=[[0, 0, 0], [1.6, 0, 1.5], [1.6, 0, -1.5]], cell=np.eye(3) * 8, pbc=True)
    with pytest.raises(UnsupportedElementError, match=r"Mo \(Z=42\)"):
        ref.compute(at)


def test_settings_config_and_cell_checks_are_clear():
    import yaml

    cfg = yaml.safe_load((ROOT / "conf/reference/pyscf_dft.yaml").read_text())
    ref = make_reference(cfg.pop("name"), **cfg)  # every yaml key is a constructor keyword
    s = ref.settings()
    assert s["name"] == "pyscf_dft" and s["kmesh"] == cfg["kmesh"] and s["block_cutoff_A"] == cfg["block_cutoff"]
    import json

    json.dumps(s)
    with pytest.raises(ValueError, match="kmesh"):
        PySCFReference(kmesh=[3, 3])
    with pytest.raises(ValueError, match="dispersion"):
        PySCFReference(dispersion="d5")
    with pytest.raises(ValueError, match=r"ke_cutof.*did you mean 'ke_cutoff_Ry'"):
        make_reference("pyscf_dft", ke_cutof=100)
    # blocks come from the k-mesh's BvK supercell: 3×3 × 2.13 Å is too narrow for a 5 Å cutoff
    sheet = build_structure("monolayer_graphene", a=2.46)
    with pytest.raises(CellTooSmallError, match=r"kmesh=\[5, 5, 1\]"):
        PySCFReference(kmesh=[3, 3, 1], block_cutoff=5.0).compute(sheet)
    with pytest.raises(ValueError, match="3D-periodic"):
        PySCFReference().compute(Atoms("C2", positions=[[0, 0, 0], [1.4, 0, 0]]))


# ----------------------------------------------------------------------------------------- slow tests
@pytest.fixture(scope="module")
def flat_sheet():
    return build_structure("monolayer_graphene", a=2.46)  # 2 atoms, 20 Å vacuum


@pytest.fixture(scope="module")
def sheet_result(flat_sheet):
    """Flat graphene primitive cell at the default settings (8×8×1 k-mesh, 8 Å cutoff), SCF only."""
    ref = PySCFReference()
    mf, _ = ref.run_scf(flat_sheet)
    kfrac, Hk, Sk, eps = ref.kpoint_matrices(flat_sheet, mf)
    blocks, stats = ref.real_space_blocks(flat_sheet, kfrac, Hk, Sk)
    fermi = ref._fermi_level_eV(eps, mf.cell.nelectron)
    return {"ref": ref, "mf": mf, "kfrac": kfrac, "Hk": Hk, "Sk": Sk, "eps": eps, "blocks": blocks,
            "stats": stats, "fermi": fermi}


@pytest.mark.slow
def test_hermiticity_is_exact_and_blocks_are_real(sheet_result):
    b, st = sheet_result["blocks"], sheet_result["stats"]
    rev = b.reverse_index()
    assert np.array_equal(b.H, np.transpose(b.H[rev], (0, 2, 1)))
    assert np.array_equal(b.S, np.transpose(b.S[rev], (0, 2, 1)))
    assert st["max_abs_imag_H_eV"] < 1e-8 and st["max_abs_imag_S"] < 1e-10
    self_edges = (b.edge_index[0] == b.edge_index[1]) & (np.abs(b.cell_shift).sum(1) == 0)
    assert self_edges.sum() == 2


@pytest.mark.slow
def test_overlap_blocks_equal_direct_real_space_integrals(sheet_result, flat_sheet):
    """S_ij(R) from the k-mesh equals the overlap of atom i (cell 0) and atom j (cell R) computed directly
    in real space: this fixes the Fourier sign and the (i, j, R) assignment independently of PySCF's k code
    (folding back alone could not: any consistent transform pair inverts)."""
    from pyscf import gto

    ref, b = sheet_result["ref"], sheet_result["blocks"]
    tr = ref.layout.atom_transform(6, "pyscf")
    dist = _bond_lengths(flat_sheet, b)
    cell = flat_sheet.cell.array
    rng = np.random.default_rng(0)
    far = rng.choice(np.flatnonzero((dist > 3.0) & (dist < 8.0)), 10, replace=False)
    near = np.flatnonzero((dist > 0.1) & (dist < 3.0))  # 1st, 2nd, 3rd neighbours, both directions
    assert len(near) == 24
    for e in np.concatenate([near, far]):
        i, j = b.edge_index[:, e]
        rj = flat_sheet.positions[j] + b.cell_shift[e] @ cell
        mol = gto.M(atom=[("C", flat_sheet.positions[i]), ("C", rj)], basis="gth-szv", unit="Angstrom",
                    verbose=0)
        s = mol.intor("int1e_ovlp")[:4, 4:]
        np.testing.assert_allclose(b.S[e, :4, :4], tr @ s @ tr.T, atol=1e-8)


@pytest.mark.slow
def test_folding_reproduces_solver_kpoint_matrices_and_eigenvalues(sheet_result, flat_sheet):
    """Σ_R e^{ik·R} H(R) at the mesh's k-points gives back PySCF's H(k), S(k) and orbital energies."""
    r = sheet_result
    b, st, ref = r["blocks"], r["stats"], r["ref"]
    eps_pyscf = np.asarray(r["mf"].mo_energy) * 27.211386245988
    np.testing.assert_allclose(r["eps"], eps_pyscf, atol=1e-10)  # H(k) = S C ε C^† S is PySCF's
    for k in range(len(r["kfrac"])):
        assert np.abs(eigh(r["Hk"][k], r["Sk"][k], eigvals_only=True) - r["eps"][k]).max() < 1e-9
    tr = ref.layout.full_transform(flat_sheet.numbers, "pyscf")
    err_all, err_low = [], []
    for k, kf in enumerate(r["kfrac"]):
        Hf, Sf = b.fold(kf, "H"), b.fold(kf, "S")
        assert np.abs(Sf - tr @ r["Sk"][k] @ tr.T).max() < 1e-5
        assert np.abs(Hf - tr @ r["Hk"][k] @ tr.T).max() < 1e-3
        d = np.abs(eigh(Hf, Sf, eigvals_only=True) - r["eps"][k])
        err_all.append(d.max())
        err_low.append(d[r["eps"][k] < r["fermi"] + 3.0].max())
    assert max(err_low) < 1e-3, max(err_low)  # occupied bands and 3 eV above E_F: < 1 meV
    assert max(err_all) == pytest.approx(st["max_fold_eig_error_eV"])
    assert max(err_all) < 5e-3  # highest conduction bands: a few meV at 8 Å
    # the truncation is measured and shrinks with the cutoff
    prev = None
    for rc in (6.0, 7.0, 8.0):
        s_rc = PySCFReference(block_cutoff=rc).real_space_blocks(flat_sheet, r["kfrac"], r["Hk"], r["Sk"])[1]
        cur = (s_rc["max_dropped_abs_H_eV"], s_rc["max_fold_eig_error_eV"])
        if prev is not None:
            assert cur[0] < prev[0] and cur[1] < prev[1]
        prev = cur
    assert prev[0] == st["max_dropped_abs_H_eV"] < 1e-3


@pytest.mark.slow
def test_scf_not_converged_is_reported():
    from hedgenet.reference import SCFNotConvergedError

    at = build_structure("monolayer_graphene", a=2.46, vacuum=12.0)
    ref = PySCFReference(kmesh=[2, 2, 1], ke_cutoff_Ry=120, max_cycles=1, dispersion=None, block_cutoff=2.0)
    with pytest.raises(SCFNotConvergedError, match="did not converge in 1 cycles"):
        ref.compute(at)


@pytest.mark.slow
def test_fast_gradient_equals_pyscf_gradient():
    """The density-based local-pseudopotential term reproduces PySCF's own k-point gradient."""
    from pyscf.pbc.dft import numint

    at = build_structure("monolayer_graphene", a=2.46, vacuum=12.0)
    at.rattle(0.03, seed=1)
    ref = PySCFReference(kmesh=[2, 2, 1], ke_cutoff_Ry=160, dispersion=None)
    mf, _ = ref.run_scf(at)
    g_fast = _krks_gradients(mf).kernel()
    mf._numint = numint.KNumInt()
    g_pyscf = mf.nuc_grad_method().kernel()
    np.testing.assert_allclose(g_fast, g_pyscf, atol=1e-9)


@pytest.mark.slow
def test_forces_are_minus_free_energy_gradient():
    """Analytic forces (KS + Fermi smearing + D3) against a central difference of the free energy along a
    random displacement direction. K is on the 3×3 mesh and the electronic temperature is raised to
    3000 K so that fractional occupations (the −TS term) really take part."""
    at = build_structure("monolayer_graphene", a=2.46)
    at.rattle(0.02, seed=4)
    ref = PySCFReference(kmesh=[3, 3, 1], smearing_K=3000.0)
    res = ref.compute(at, with_blocks=False)
    assert res.stats["entropy_term_eV"] < -1e-3 and res.stats["dispersion_energy_eV"] < 0
    d = np.random.default_rng(0).normal(size=at.positions.shape)
    d /= np.linalg.norm(d)
    h = 2e-3  # Å along the unit direction d
    p, m = at.copy(), at.copy()
    p.positions += h * d
    m.positions -= h * d
    fd = -(ref.energy(p) - ref.energy(m)) / (2 * h)
    analytic = float((res.forces_eV_per_A * d).sum())
    assert abs(fd - analytic) < 1e-3, (fd, analytic)  # < 1 meV/Å


@pytest.mark.slow
def test_pi_hopping_agrees_with_xtb(sheet_result, flat_sheet):
    """Nearest-neighbour p_z–p_z hopping: same sign, three equal neighbours, p_z–s zero in the flat sheet,
    same order of magnitude as GFN1-xTB (6×6 Γ supercell, 5 Å cutoff). Measured: PBE/gth-szv −4.90 eV
    (S = 0.333), GFN1-xTB −4.01 eV (S = 0.172); raw non-orthogonal-basis matrix elements."""
    from hedgenet.reference.xtb import XTBReference

    def nn_blocks(atoms, blocks):
        dist = _bond_lengths(atoms, blocks)
        nn = np.flatnonzero(np.abs(dist - 2.46 / np.sqrt(3)) < 0.05)
        assert len(nn) == 3 * len(atoms)
        return blocks.H[nn]

    h_dft = nn_blocks(flat_sheet, sheet_result["blocks"])
    sheet6 = build_structure("monolayer_graphene", a=2.46).repeat((6, 6, 1))
    h_xtb = nn_blocks(sheet6, XTBReference(block_cutoff=5.0).compute(sheet6).blocks)
    for h, tol in ((h_dft, 1e-6), (h_xtb, 1e-5)):  # eV; xTB: its SCF accuracy
        t = h[:, P_Z, P_Z]
        assert np.ptp(t) < tol, np.ptp(t)  # all nearest neighbours equal
        assert np.abs(h[:, S, P_Z]).max() < tol and np.abs(h[:, P_Z, S]).max() < tol  # σ–π decoupled
    t_dft, t_xtb = h_dft[:, P_Z, P_Z].mean(), h_xtb[:, P_Z, P_Z].mean()
    assert t_dft < 0 and t_xtb < 0
    assert 0.3 < t_dft / t_xtb < 3.0, (t_dft, t_xtb)
