"""HedgeNet and its graphs: symmetry (E(3), permutation, Hermiticity), gradients, batching, relation
functions, error messages, block-edge order, and a small overfit on GFN1-xTB labels.

Tiny models in float64 on CPU, one torch thread (tiny ops are much faster that way on shared cores).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from hedgenet.graphs import RELATIONS, collate, make_relations, relation_edges, subsample_block_edges
from hedgenet.models import HedgeNet, model_size
from hedgenet.models._e3nn import o3
from hedgenet.orbitals.blocks import block_edges
from hedgenet.orbitals.layout import OrbitalLayout
from hedgenet.reference.xtb import GFN1_SHELLS
from hedgenet.structures import build_structure, make_supercell

LAYOUT = OrbitalLayout(dict(GFN1_SHELLS), basis_name="GFN1-xTB")
TINY = {"channels": 4, "lmax": 2, "num_layers": 2}


pytestmark = pytest.mark.usefixtures("float64_one_thread")


def rattled(builder: str, n: int, amplitude: float = 0.08, seed: int = 0, **kw):
    atoms = make_supercell(build_structure(builder, **kw), np.diag([n, n, 1]))
    atoms.rattle(amplitude, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def graphene():
    return rattled("bilayer_graphene", 2, seed=1)


@pytest.fixture(scope="module")
def mos2():
    return rattled("bilayer_mos2", 1, seed=2)


@pytest.fixture(scope="module", params=[1, 2, 3, "pairs"], ids=["two-body", "correlation2", "correlation3", "onsite-pairs"])
def model(request):
    """Joint model for C, S and Mo (blocks padded to 9 orbitals); two-body messages, with their square and cube,
    and with the square and an on-site pair sum (random weights: it starts at zero)."""
    torch.manual_seed(0)
    pairs = request.param == "pairs"
    size = {**TINY, "correlation": 2 if pairs else request.param, **({"onsite_pair_sum": True} if pairs else {})}
    m = HedgeNet([6, 16, 42], size=size, task="joint", layout=LAYOUT, block_cutoff=3.5, r_intra=3.0, r_inter=4.0,
                 registry_widths=(0.5, 1.0), dtype="float64")
    if pairs:
        with torch.no_grad():
            m.onsite_pairs.weight.normal_(0.0, 0.2)
    return m


def transformed(atoms, rot: np.ndarray, trans: np.ndarray):
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
    out.positions = atoms.positions @ rot.T + trans
    return out


def orbital_rotation(numbers, rot: np.ndarray, n_max: int) -> torch.Tensor:
    """(N, n_max, n_max) block-diagonal Wigner-D (e3nn, parity (−1)^l) of every atom's orbitals."""
    R = torch.as_tensor(rot, dtype=torch.float64)
    out = torch.zeros(len(numbers), n_max, n_max, dtype=torch.float64)
    for a, z in enumerate(numbers):
        k = 0
        for l in LAYOUT.shells_of(int(z)):
            out[a, k : k + 2 * l + 1, k : k + 2 * l + 1] = o3.Irrep(l, (-1) ** l).D_from_matrix(R)
            k += 2 * l + 1
    return out


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "rotoinversion"])
@pytest.mark.parametrize("which", ["graphene", "mos2"])
def test_e3_equivariance(model, which, proper, request):
    atoms = request.getfixturevalue(which)
    rng = np.random.default_rng(3)
    rot = Rotation.random(random_state=11).as_matrix() * (1 if proper else -1)
    trans = rng.normal(size=3) * 2.0
    build = model.graph_builder()
    g0, g1 = build(atoms), build(transformed(atoms, rot, trans))
    assert torch.equal(g0.block_index, g1.block_index) and torch.equal(g0.block_shift, g1.block_shift)
    p0, p1 = model(g0), model(g1)
    assert torch.allclose(p1["energy"], p0["energy"], atol=1e-10)
    assert torch.allclose(p1["forces"], p0["forces"] @ torch.as_tensor(rot).T, atol=1e-10)
    D = orbital_rotation(atoms.numbers, rot, 9)
    i, j = g0.block_index
    for key in ("H", "S"):
        expect = D[i] @ p0[key] @ D[j].transpose(1, 2)
        assert p0[key].abs().max() > 1e-3  # not trivially zero
        assert torch.allclose(p1[key], expect, atol=1e-10), (key, (p1[key] - expect).abs().max())


def test_permutation_equivariance(model, mos2):
    perm = np.random.default_rng(4).permutation(len(mos2))
    build = model.graph_builder()
    g0, g1 = build(mos2), build(mos2[perm])
    p0, p1 = model(g0), model(g1)
    assert torch.allclose(p0["energy"], p1["energy"], atol=1e-10)
    assert torch.allclose(p0["forces"][perm], p1["forces"], atol=1e-10)
    key0 = {
        (int(i), int(j), *map(int, r)): e
        for e, (i, j, r) in enumerate(zip(*g0.block_index, g0.block_shift))
    }
    idx = [
        key0[(int(perm[i]), int(perm[j]), *map(int, r))]
        for i, j, r in zip(*g1.block_index, g1.block_shift)
    ]
    assert len(idx) == len(key0)
    for key in ("H", "S"):
        assert torch.allclose(p0[key][idx], p1[key], atol=1e-10)


@pytest.mark.parametrize("family", ["hedgenet", "mace"])
def test_float32_energy_is_permutation_invariant_at_the_meV_scale(family):
    """A float32 model's total energy keeps what bilayer physics needs: the per-species shifts (the atoms' reference
    energies, −57.86 eV for xTB's carbon) summed over a 5×5 AB bilayer in float32 rounded by ≈ 0.01–0.09 meV/atom,
    as much as the interlayer energies; the energy is now exact to 10⁻³ meV/atom under a reordering of the atoms
    and equal to the same model's in float64 (the sum is taken in float64). HedgeNet and the MACE baseline."""
    atoms = rattled("bilayer_graphene", 5, amplitude=0.03, seed=3)
    torch.manual_seed(0)
    if family == "mace":
        from hedgenet.models.baselines.mace import MACEModel

        model = MACEModel([6], r_max=3.0, size={"channels": 4, "num_layers": 1}, dtype="float32")
        shift = model.mace.atomic_energies_fn.atomic_energies
    else:
        model = HedgeNet([6], size=TINY, task="forces", r_intra=3.0, r_inter=4.0, dtype="float32")
        shift = model.energy_shift
    with torch.no_grad():
        shift.fill_(-57.86)
    perm = np.random.default_rng(5).permutation(len(atoms))
    build = model.graph_builder()
    e = [float(model(build(a).to(dtype=torch.float32))["energy"][0]) for a in (atoms, atoms[perm], atoms[perm[::-1]])]
    e64 = float(model.double()(build(atoms))["energy"][0])
    per_atom_meV = 1e3 * np.abs(np.array(e) - e64) / len(atoms)
    assert per_atom_meV.max() < 1e-3, per_atom_meV


def test_hermiticity_exact(model, graphene, mos2):
    for atoms in (graphene, mos2):
        g = model.graph_builder()(atoms)
        p = model(g)
        rev = g.block_reverse
        i, j = g.block_index
        assert torch.equal(i[rev], j) and torch.equal(g.block_shift[rev], -g.block_shift)
        for key in ("H", "S"):
            assert (p[key] - p[key][rev].transpose(1, 2)).abs().max() <= 1e-12
            assert (p[key][~g.block_mask] == 0).all()  # padding stays zero


def test_forces_match_finite_differences(model, mos2):
    g = model.graph_builder()(mos2)
    forces = model(g)["forces"]
    h = 1e-4
    for atom, comp in [(0, 0), (2, 2), (4, 1)]:
        energies = []
        for sign in (1, -1):
            gd = model.graph_builder()(mos2)
            gd.pos = g.pos.clone()
            gd.pos[atom, comp] += sign * h
            energies.append(float(model(gd, compute_forces=False)["energy"]))
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert abs(fd - float(forces[atom, comp])) < 1e-6 * max(1.0, abs(fd)), (atom, comp, fd)


def strain_derivative(energy, atoms, a: int, b: int, h: float) -> float:
    """∂E/∂ε_ab (eV) of ``energy(atoms)`` by central differences under the symmetric strain ε_ab = ε_ba = h/2
    of positions and cell together."""
    eps = np.zeros((3, 3))
    eps[a, b] += h / 2
    eps[b, a] += h / 2
    energies = []
    for sign in (1, -1):
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
        energies.append(energy(strained))
    return (energies[0] - energies[1]) / (2 * h)


def assert_virial_is_strain_derivative(model, structures, h: float = 1e-5, tol: float = 1e-6):
    """The model's virial W = −∂E/∂ε (eV), batched, against central differences of E under a homogeneous
    strain of positions and cell (symmetric ε: one diagonal, one shear and one out-of-plane component)."""
    build = model.graph_builder()
    batch = collate([build(a) for a in structures])
    virial = model(batch.to(dtype=model.dtype), compute_virial=True)["virial"]
    assert virial.shape == (len(structures), 3, 3)
    assert torch.allclose(virial, virial.transpose(1, 2), atol=1e-9)  # no torque: rotation invariance
    def energy(strained):
        return float(model(build(strained).to(dtype=model.dtype), compute_forces=False)["energy"][0])

    for k, atoms in enumerate(structures):
        for a, b in [(0, 0), (0, 1), (2, 2), (1, 2)]:
            fd = -strain_derivative(energy, atoms, a, b, h)
            assert abs(fd - float(virial[k, a, b])) < tol * max(1.0, abs(fd)), (k, a, b, fd, float(virial[k, a, b]))


def test_virial_is_minus_strain_derivative(model, graphene, mos2):
    assert_virial_is_strain_derivative(model, [graphene, mos2])
    # asked for explicitly or when the batch carries virial labels; never for plain inference
    g = model.graph_builder()(graphene)
    assert "virial" not in model(g)
    g.virial = torch.zeros(1, 3, 3)
    assert model(g)["virial"].shape == (1, 3, 3)


def test_batching_matches_single_graphs(model, graphene, mos2):
    build = model.graph_builder()
    graphs = [build(graphene), build(mos2), build(rattled("bilayer_graphene", 2, seed=5))]
    batch = collate(graphs)
    assert batch.num_graphs == 3 and int(batch.batch.max()) == 2
    pb = model(batch)
    singles = [model(g) for g in graphs]
    assert torch.allclose(pb["energy"], torch.cat([p["energy"] for p in singles]), atol=1e-10)
    for key in ("forces", "H", "S"):
        assert torch.allclose(pb[key], torch.cat([p[key] for p in singles]), atol=1e-10), key
    # reverse index stays valid after offsets
    assert torch.equal(batch.block_index[0][batch.block_reverse], batch.block_index[1])


def edge_keys(g) -> list[tuple]:
    i, j = g.block_index.tolist()
    return [(a, b, *map(int, r)) for a, b, r in zip(i, j, g.block_shift.tolist())]


def test_block_edge_subsample_keeps_pairs_and_predictions(model, graphene):
    """A training step's random block edges (train.block_edge_fraction): each kept with its reverse, labels
    carried along, and the kept blocks predicted exactly as in the full graph (the heads are per edge pair)."""
    g = collate([model.graph_builder()(graphene)])
    g.H = torch.randn(g.block_index.shape[1], 9, 9)
    full = model(g)
    sub = subsample_block_edges(g, 0.3, torch.Generator().manual_seed(3))
    n, m = g.block_index.shape[1], sub.block_index.shape[1]
    assert 0.15 * n < m < 0.45 * n
    i, j = sub.block_index
    assert torch.equal(i[sub.block_reverse], j) and torch.equal(sub.block_shift[sub.block_reverse], -sub.block_shift)
    where = {k: e for e, k in enumerate(edge_keys(g))}
    kept = torch.tensor([where[k] for k in edge_keys(sub)])
    assert torch.equal(sub.H, g.H[kept]) and torch.equal(sub.block_kind, g.block_kind[kept])
    p = model(sub)
    for key in ("H", "S"):
        torch.testing.assert_close(p[key], full[key][kept], rtol=0, atol=1e-12)
    torch.testing.assert_close(p["forces"], full["forces"], rtol=0, atol=1e-12)
    # the same draw from the same seed; every edge at fraction 1; a fraction outside (0, 1] refused
    again = subsample_block_edges(g, 0.3, torch.Generator().manual_seed(3))
    assert torch.equal(again.block_index, sub.block_index)
    assert subsample_block_edges(g, 1.0) is g
    with pytest.raises(ValueError, match="block_edge_fraction"):
        subsample_block_edges(g, 0.0)


def test_onsite_pair_sum_is_the_sum_over_each_relations_neighbours(graphene):
    """model.size.onsite_pair_sum: the on-site blocks gain Σ_t Σ_{j ∈ N_t(i)} W^t_{Z_i Z_j}·B_t(r_ij) on the
    identity-like basis (each shell's own number), summed over the intra- and interlayer neighbours within each
    relation's cutoff — recomputed here by hand with ase's neighbour list — and nothing off-site; a model saved
    without the key has none."""
    from ase.neighborlist import neighbor_list

    torch.manual_seed(1)
    size = {**TINY, "onsite_pair_sum": True}
    m = HedgeNet([6], size=size, task="joint", layout=LAYOUT, block_cutoff=3.5, r_intra=3.0, r_inter=4.0,
                 dtype="float64")
    g = collate([m.graph_builder()(graphene)])
    before = m(g)["H"].detach()
    with torch.no_grad():
        m.onsite_pairs.weight.normal_(0.0, 0.3)
    diff = (m(g)["H"].detach() - before).numpy()
    i, j = g.block_index
    onsite = ((i == j) & (g.block_shift == 0).all(dim=1)).numpy()
    assert np.abs(diff[~onsite]).max() == 0.0
    a_, b_, d_ = neighbor_list("ijd", graphene, 4.0)
    layer = graphene.arrays["layer"]
    w = m.onsite_pairs.weight.detach()  # (relation, species pair, basis, n_out): C only, s and p shells
    basis = m.head_blocks.decoder.onsite_basis.detach().numpy()[:, 0]  # (c, n, n)
    for e in np.flatnonzero(onsite)[:5]:
        a = int(i[e])
        coef = np.zeros(w.shape[-1])
        for t, (cross, cut) in enumerate(zip((False, True), (3.0, 4.0))):
            sel = (a_ == a) & (d_ < cut) & ((layer[b_] != layer[a]) == cross)
            rb = m.onsite_pairs.radial[t](torch.as_tensor(d_[sel])).numpy()
            coef += (rb @ w[t, 0].numpy()).sum(axis=0)
        np.testing.assert_allclose(diff[e], np.einsum("c,ckl->kl", coef, basis), rtol=0, atol=1e-12)
    assert not np.allclose(diff[onsite], 0.0)
    assert HedgeNet([6], size=TINY, task="joint", layout=LAYOUT, block_cutoff=3.5).onsite_pairs is None


def test_block_edge_subsample_loss_is_unbiased(model, graphene):
    """The block losses of the subsampled steps average to the full one: every edge is kept with one probability.
    (A stand-in prediction rides along in ``S`` so that 400 draws need no model call.)"""
    from hedgenet.training.module import TrainingModule

    g = collate([model.graph_builder()(graphene)])
    g.H, g.S = torch.randn(2, g.block_index.shape[1], 9, 9)
    g.S[g.block_kind == 0] *= 3.0  # on-site errors larger than off-site ones, as in training

    def mse(b):
        return ((b.S - b.H)[b.block_mask] ** 2).mean()

    module = TrainingModule(model, {"H": 1.0}, {"lr": 1e-3}, block_edge_fraction=0.25)
    draws = torch.stack([mse(module.subsampled_blocks(g, step)) for step in range(400)])
    assert float(draws.mean()) == pytest.approx(float(mse(g)), rel=0.03)
    assert not torch.equal(module.subsampled_blocks(g, 0).block_index, module.subsampled_blocks(g, 1).block_index)
    assert torch.equal(module.subsampled_blocks(g, 7).block_index, module.subsampled_blocks(g, 7).block_index)
    with pytest.raises(ValueError, match="block_edge_fraction"):
        TrainingModule(model, {"H": 1.0}, {"lr": 1e-3}, block_edge_fraction=1.5)


def test_block_edges_match_reference_order(model, graphene, mos2):
    for atoms in (graphene, mos2):
        g = model.graph_builder()(atoms)
        ei, shift, _ = block_edges(atoms, model.block_cutoff)
        assert np.array_equal(g.block_index.numpy(), ei)
        assert np.array_equal(g.block_shift.numpy().astype(np.int64), shift)


@pytest.mark.parametrize("name", RELATIONS)
def test_relation_functions(name, mos2):
    spec = make_relations(name, r_intra=3.0, r_inter=4.0, elements=[16, 42])
    edges = relation_edges(mos2, spec)
    assert tuple(edges) == spec.types
    # every relation function partitions the same pairs (single: one cutoff of max(r_intra, r_inter))
    layer = mos2.arrays["layer"]
    n_total = sum(v[0].shape[1] for v in edges.values())
    ref = make_relations("intra_inter", r_intra=3.0, r_inter=4.0)
    n_ref = sum(v[0].shape[1] for v in relation_edges(mos2, ref).values())
    if name != "single":
        assert n_total == n_ref
    for t, (index, shift) in edges.items():
        i, j = index
        d = np.linalg.norm(mos2.positions[j] + shift @ mos2.cell.array - mos2.positions[i], axis=1)
        assert (d < spec.cutoff_of(t)).all()
        if t in ("intra", "L0-L0", "L1-L1") or t.startswith("intra:"):
            assert (layer[i] == layer[j]).all()
        if t in ("inter", "L0-L1") or t.startswith("inter:"):
            assert (layer[i] != layer[j]).all()
    torch.manual_seed(0)
    m = HedgeNet([16, 42], relations=name, size={"channels": 4, "lmax": 1, "num_layers": 1},
                 task="forces", r_intra=3.0, r_inter=4.0, dtype="float64")
    assert len(m.layers[0].messages) == len(spec.types)
    p = m(m.graph_builder()(mos2))
    assert torch.isfinite(p["energy"]).all() and torch.isfinite(p["forces"]).all()


def test_helpful_errors(mos2):
    with pytest.raises(ValueError, match="intra_inter") as err:
        make_relations("intra_intr")
    assert "by_layer_pair" in str(err.value)
    with pytest.raises(ValueError, match="hedgenet_small"):
        HedgeNet([6], size="hedgenet_smal", task="forces")
    with pytest.raises(ValueError, match="joint"):
        HedgeNet([6], task="joint_", layout=LAYOUT, block_cutoff=3.0)
    with pytest.raises(ValueError, match="layout"):
        HedgeNet([6], task="hamiltonian")
    with pytest.raises(ValueError, match="float64"):
        HedgeNet([6], task="forces", dtype="double64")
    m = HedgeNet([6], size={"channels": 2, "lmax": 1, "num_layers": 1}, task="forces", dtype="float64")
    with pytest.raises(ValueError, match="Mo"):
        m.graph_builder()(mos2)
    assert model_size("hedgenet_medium")["num_layers"] == 3


def test_config_round_trip(graphene):
    m = HedgeNet([6], relations="by_layer_pair", size={"channels": 2, "lmax": 1, "num_layers": 1},
                 task="forces", r_intra=3.0, r_inter=4.0, dtype="float64")
    m2 = HedgeNet(**json.loads(json.dumps(m.config)))
    m2.load_state_dict(m.state_dict())
    g = m.graph_builder()(graphene)
    assert m2.relations == m.relations
    assert torch.equal(m(g)["forces"], m2(g)["forces"])


def test_overfit_xtb_labels():
    """A tiny joint model fits energies, forces and H/S blocks of two rattled GFN1-xTB cells.

    4×4 AB bilayer graphene (64 atoms; n not divisible by 3, so the Dirac points do not fold onto Γ
    and the Γ-point forces stay local -- 3×3 cells plateau at ~1/3 of the initial force error)."""
    from hedgenet.reference import make_reference

    ref = make_reference("xtb", block_cutoff=3.0)
    torch.manual_seed(0)
    m = HedgeNet([6], size={"channels": 8, "lmax": 1, "num_layers": 2}, task="joint",
                 layout=ref.layout, block_cutoff=3.0, r_intra=3.0, r_inter=3.6, dtype="float64")
    build = m.graph_builder()
    graphs = []
    for seed in range(2):
        atoms = rattled("bilayer_graphene", 4, amplitude=0.05, seed=10 + seed)
        res = ref.compute(atoms)
        b = res.blocks
        sample = {
            "positions": atoms.positions, "cell": atoms.cell.array, "numbers": atoms.numbers,
            "layer": atoms.arrays["layer"], "pbc": atoms.pbc, "energy": res.energy_eV,
            "forces": res.forces_eV_per_A, "edge_index": b.edge_index, "cell_shift": b.cell_shift,
            "H": b.H, "S": b.S,
        }
        g = build(sample)  # the dataset path: labels keep the solver's edge order
        assert np.array_equal(g.block_index.numpy(), b.edge_index)
        graphs.append(g)
    m.init_statistics(graphs)
    batch = collate(graphs)
    mask = batch.block_mask

    def errors():
        p = m(batch)
        return {
            "forces": float((p["forces"] - batch.forces).abs().mean()),
            "H": float((p["H"] - batch.H)[mask].abs().mean()),
            "S": float((p["S"] - batch.S)[mask].abs().mean()),
        }

    before = errors()
    steps = 60
    opt = torch.optim.Adam(m.parameters(), lr=5e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-2, total_steps=steps)
    for _ in range(steps):
        opt.zero_grad()
        p = m(batch, training=True)
        loss = (
            ((p["energy"] - batch.energy) / batch.n_atoms).pow(2).mean()
            + (p["forces"] - batch.forces).pow(2).mean()
            + (p["H"] - batch.H)[mask].pow(2).mean()
            + 100 * (p["S"] - batch.S)[mask].pow(2).mean()
        )
        loss.backward()
        opt.step()
        sched.step()
    after = errors()
    for key in before:
        assert after[key] < 0.2 * before[key], (key, before, after)


def test_overlap_is_two_center_and_hamiltonian_is_not(model, graphene):
    """Moving atom k changes S only on blocks that involve k (two-center integrals), while H_ij feels k
    through the message passing (environment dependence, which is what the network is for)."""
    build = model.graph_builder()
    moved = graphene.copy()
    k = 5
    moved.positions[k] += np.array([0.05, -0.03, 0.02])
    g0, g1 = build(graphene), build(moved)
    assert torch.equal(g0.block_index, g1.block_index)
    p0, p1 = model(g0), model(g1)
    i, j = g0.block_index
    far = (i != k) & (j != k)
    assert torch.allclose(p0["S"][far], p1["S"][far], atol=1e-13)
    assert not torch.allclose(p0["S"][~far], p1["S"][~far])
    assert (p0["H"][far] - p1["H"][far]).abs().max() > 1e-8


def test_saved_model_of_another_architecture_is_refused_clearly(model, tmp_path):
    from hedgenet.models.io import load_model, save_model

    path = save_model(tmp_path / "m.pt", "hedgenet", model.config, model)
    assert load_model(path).config == model.config
    data = torch.load(path, weights_only=False)
    data["state_dict"].pop("head_S.mlp.layer0.weight")
    torch.save(data, path)
    with pytest.raises(ValueError, match="does not fit this hedgenet's architecture.*Fix: retrain"):
        load_model(path)


@pytest.mark.parametrize("correlation", [1, 2, 3])
def test_correlation_two_sees_bond_angles_in_one_layer(correlation):
    """One interaction layer of two-body messages gives an atom an energy that depends on its neighbours'
    distances only; their square per atom (correlation 2) makes it depend on the bond angle."""
    from ase import Atoms

    torch.manual_seed(0)
    model = HedgeNet([6], relations="single", r_single=2.5, task="forces", dtype="float64",
                     size={"channels": 8, "lmax": 1, "num_layers": 1, "correlation": correlation})
    build = model.graph_builder()

    def centre_energy(angle_deg):
        a = np.radians(angle_deg)
        pos = [[10, 10, 10], [11.4, 10, 10], [10 + 1.4 * np.cos(a), 10 + 1.4 * np.sin(a), 10]]
        atoms = Atoms("C3", positions=pos, cell=[20, 20, 20], pbc=True)  # the outer pair 2.0–2.4 Å apart
        return float(model(build(atoms))["node_energy"][0])

    change = abs(centre_energy(120.0) - centre_energy(100.0))
    if correlation == 1:
        assert change < 1e-12
    else:
        assert change > 1e-6
