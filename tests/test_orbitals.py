"""The orbital convention: solver orders become e3nn's real spherical harmonics, checked two ways."""

import numpy as np
import pytest
from ase import Atoms
from scipy.linalg import block_diag
from scipy.spatial.transform import Rotation

from hedgenet.orbitals.layout import OrbitalLayout, shell_transform
from hedgenet.reference.xtb import XTBReference


def _standard_real_harmonics(v):
    """Textbook real harmonics (z polar), component-normalised: p=(y,z,x) (m=-1,0,1), d=(xy,yz,z²,xz,x²−y²)."""
    x, y, z = v.T
    p = np.stack([y, z, x], 1) * np.sqrt(3)
    d = np.stack(
        [np.sqrt(15) * x * y, np.sqrt(15) * y * z, np.sqrt(5) / 2 * (3 * z * z - 1), np.sqrt(15) * x * z,
         np.sqrt(15) / 2 * (x * x - y * y)], 1)
    return p, d


def test_shell_transforms_map_textbook_harmonics_onto_e3nn():
    e3nn = pytest.importorskip("e3nn")  # noqa: F841
    import mace  # noqa: F401  (import order: STACK.md pitfall 2)
    import torch
    from e3nn import o3

    v = np.random.default_rng(0).normal(size=(50, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    p, d = _standard_real_harmonics(v)
    tv = torch.tensor(v)
    y1 = o3.spherical_harmonics(1, tv, True, normalization="component").numpy()
    y2 = o3.spherical_harmonics(2, tv, True, normalization="component").numpy()
    # tblite p is (y, z, x) = textbook m order; PySCF p is (x, y, z)
    np.testing.assert_allclose(p @ shell_transform("tblite", 1).T, y1, atol=1e-12)
    np.testing.assert_allclose(p[:, [2, 0, 1]] @ shell_transform("pyscf", 1).T, y1, atol=1e-12)
    np.testing.assert_allclose(d @ shell_transform("tblite", 2).T, y2, atol=1e-12)
    for conv in ("tblite", "pyscf"):
        for l in (0, 1, 2):
            u = shell_transform(conv, l)
            np.testing.assert_allclose(u @ u.T, np.eye(2 * l + 1), atol=1e-14)


def test_xtb_blocks_rotate_with_wigner_d_including_d_shells():
    """A rotated molecule with s, p and d shells (Mo: d first) gives blocks D H Dᵀ and forces R F."""
    import mace  # noqa: F401
    import torch
    from e3nn import o3

    ref = XTBReference(block_cutoff=6.0)
    at = Atoms("MoS2H2", positions=[[0, 0, 0], [2.1, 0.3, 0.1], [-0.8, 1.9, 0.4], [2.9, 1.2, 0.6], [-1.2, 2.6, 1.5]])
    at.arrays["layer"] = np.zeros(len(at), dtype=np.int64)
    R = Rotation.random(random_state=3).as_matrix()
    rot = at.copy()
    rot.positions = at.positions @ R.T
    r0, r1 = ref.compute(at), ref.compute(rot)

    def D(z):
        return block_diag(*[o3.Irrep(l, (-1) ** l).D_from_matrix(torch.tensor(R)).numpy() for l in ref.layout.shells_of(z)])

    b0, b1 = r0.blocks, r1.blocks
    np.testing.assert_array_equal(b0.edge_index, b1.edge_index)
    for e in range(b0.n_edges):
        i, j = b0.edge_index[:, e]
        ni, nj = b0.n_orb[i], b0.n_orb[j]
        for M0, M1 in ((b0.H, b1.H), (b0.S, b1.S)):
            np.testing.assert_allclose(D(at.numbers[i]) @ M0[e, :ni, :nj] @ D(at.numbers[j]).T, M1[e, :ni, :nj], atol=1e-9)
    np.testing.assert_allclose(r0.forces_eV_per_A @ R.T, r1.forces_eV_per_A, atol=1e-9)
    assert abs(r0.energy_eV - r1.energy_eV) < 1e-9


def test_layout_errors_name_the_element():
    lay = OrbitalLayout(shells={6: (0, 1)}, basis_name="GFN1-xTB")
    assert lay.n_orb(6) == 4
    with pytest.raises(ValueError, match=r"Fe \(Z=26\).*supported elements: \['C'\]"):
        lay.n_orb(26)
