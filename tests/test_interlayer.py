"""Interlayer physics in the training data and the loss: rigid-layer cells move the top layer by exactly the
asked shift without net translation, and the layer net-force term sees what the per-atom force MSE misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hedgenet.data.displacements import rigid_layer_specs
from hedgenet.structures import build_structure, make_supercell
from hedgenet.training.losses import layer_mean_forces, total_loss


def test_rigid_layer_shifts_move_the_top_layer_against_the_bottom_one():
    atoms = make_supercell(build_structure("bilayer_graphene", stacking="AB"), [3, 3])
    layer = atoms.arrays["layer"]
    specs = rigid_layer_specs(layer, [[0, 0, 0.1], [0.2, -0.1, 0.0]], seed=1, start_id=7)
    assert [s.sample_id for s in specs] == [7, 8] and {s.kind for s in specs} == {"rigid"}
    for spec, shift in zip(specs, ([0, 0, 0.1], [0.2, -0.1, 0.0])):
        u = spec.displacement
        np.testing.assert_allclose(u.mean(axis=0), 0.0, atol=1e-14)  # no net translation
        np.testing.assert_allclose(u[layer == 1] - u[layer == 0][: (layer == 1).sum()], np.tile(shift, ((layer == 1).sum(), 1)),
                                   atol=1e-14)
        assert np.ptp(u[layer == 0], axis=0).max() < 1e-14  # each layer moves rigidly
        assert spec.attrs()["shift_A"] == list(map(float, shift))
    mono = make_supercell(build_structure("monolayer_graphene"), [3, 3])
    assert rigid_layer_specs(mono.arrays["layer"], [[0, 0, 0.1]], seed=1) == []  # no interlayer physics to sample
    with pytest.raises(ValueError, match=r"\[dx, dy, dz\]"):
        rigid_layer_specs(layer, [[0.1, 0.2]], seed=1)


class _Batch:
    def __init__(self, forces, layer, batch):
        self.forces, self.layer, self.batch = forces, layer, batch
        self.n_atoms = torch.bincount(batch)
        self.energy = torch.zeros(len(self.n_atoms), dtype=forces.dtype)
        self.virial = None


def test_layer_force_loss_sees_a_net_interlayer_force_the_per_atom_mse_barely_does():
    torch.manual_seed(0)
    n = 50  # two structures of 50 atoms, two layers each
    layer = torch.tensor(([0] * 25 + [1] * 25) * 2)
    batch = torch.tensor([0] * n + [1] * n)
    ref = torch.randn(2 * n, 3, dtype=torch.float64) * 0.5  # intralayer forces ~0.5 eV/Å
    b = _Batch(ref, layer, batch)
    means = layer_mean_forces(ref, b)
    assert means.shape == (4, 3)
    np.testing.assert_allclose(means[1].numpy(), ref[25:50].mean(dim=0).numpy())
    pred = ref.clone()
    pred[(layer == 1) & (batch == 0)] += torch.tensor([0.0, 0.0, -0.005], dtype=torch.float64)  # 5 meV/Å pull
    _, parts = total_loss({"forces": pred}, b, {"forces": 10.0, "layer_forces": 1000.0})
    assert parts["layer_forces"].item() == pytest.approx(0.005**2 / 12, rel=1e-9)  # one of 4 × 3 components
    assert parts["forces"].item() == pytest.approx(25 * 0.005**2 / (2 * n * 3), rel=1e-9)
    _, parts = total_loss({"forces": ref}, b, {"forces": 10.0, "layer_forces": 1000.0})
    assert parts["layer_forces"].item() == 0.0


def _registry_inputs(atoms, model):
    """The model's relation edges of ``atoms`` (float64), each with its cell shifts in the place of Y(r̂)."""
    g = model.graph_builder()(atoms)
    edges = model.relation_edges(g, g.pos.to(torch.float64), g.cell.to(torch.float64)[g.batch])
    for name, edge in zip(model.relations.types, edges):
        edge[2] = g.rel_shift[name]
    return edges


def test_registry_sees_the_in_plane_offset_of_interlayer_pairs_and_is_invariant():
    from scipy.spatial.transform import Rotation

    from hedgenet.models import HedgeNet
    from hedgenet.models.registry import normal_projectors

    torch.set_default_dtype(torch.float64)
    try:
        model = HedgeNet([6], size={"channels": 4, "lmax": 1, "num_layers": 1}, task="forces", r_intra=4.0,
                         r_inter=5.0, registry_widths=(0.5, 1.0), dtype="float64")
    finally:
        torch.set_default_dtype(torch.float32)
    ab = make_supercell(build_structure("bilayer_graphene", stacking="AB"), [3, 3])
    # flat layers: every atom's projector is ẑẑᵀ
    edges = _registry_inputs(ab, model)
    intra = [(e[0][0], e[1], torch.ones(len(e[1]), dtype=torch.float64)) for e, cross in
             zip(edges, model.relations.crosses_layers) if not cross]
    proj = normal_projectors(len(ab), intra)
    np.testing.assert_allclose(proj.numpy(), np.tile(np.diag([0.0, 0.0, 1.0]), (len(ab), 1, 1)), atol=1e-12)
    inter = edges[model.relations.types.index("inter")]
    (i, j), vec, feats = inter[0], inter[1], inter[3]
    rho2 = (vec[:, :2] ** 2).sum(1)  # in-plane offset: the layers are flat and parallel to xy
    env = model.layers[0].messages[1].radial.envelope(vec.norm(dim=1))
    np.testing.assert_allclose(feats[:, 0].numpy(), (torch.exp(-rho2 / 0.25) * env).numpy(), atol=1e-12)
    # AB stacking: half the atoms have a partner straight above/below (ρ = 0); sliding by 0.2 Å moves every
    # ρ = 0 pair to ρ = 0.2 Å although |r_ij| changes by only 0.006 Å: the registry feature drops by 15 %
    on_top = feats[:, 0] / env > 0.999
    assert int(on_top.sum()) == len(ab) // 2
    slid = ab.copy()
    slid.positions[slid.arrays["layer"] == 1] += [0.2, 0.0, 0.0]
    f_slid = _registry_inputs(slid, model)[1]
    key = {(int(a), int(b), *map(int, r)): e for e, (a, b, r) in enumerate(zip(*f_slid[0], f_slid[2]))}
    same = [key[(int(a), int(b), *map(int, r))] for a, b, r in zip(i[on_top], j[on_top], inter[2][on_top])]
    assert (f_slid[1][same].norm(dim=1) - vec[on_top].norm(dim=1)).abs().max() < 0.007
    env_slid = model.layers[0].messages[1].radial.envelope(f_slid[1][same].norm(dim=1))
    np.testing.assert_allclose((f_slid[3][same, 0] / env_slid).numpy(), np.exp(-0.04 / 0.25), rtol=1e-6)
    # invariant under rotations and reflections of the whole structure
    rot = Rotation.random(random_state=3).as_matrix() * -1
    turned = ab.copy()
    turned.set_cell(ab.cell.array @ rot.T, scale_atoms=False)
    turned.positions = ab.positions @ rot.T
    f_turned = _registry_inputs(turned, model)[1]
    order = {(int(a), int(b), *map(int, r)): e for e, (a, b, r) in enumerate(zip(*f_turned[0], f_turned[2]))}
    same = [order[(int(a), int(b), *map(int, r))] for a, b, r in zip(i, j, inter[2])]
    assert len(same) == len(order)
    np.testing.assert_allclose(f_turned[3][same].numpy(), feats.numpy(), atol=1e-10)


def test_in_plane_layer_force_loss_sees_the_sliding_force_only():
    layer = torch.tensor([0] * 25 + [1] * 25)
    batch = torch.zeros(50, dtype=torch.long)
    ref = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.5
    b = _Batch(ref, layer, batch)
    weights = {"forces": 10.0, "layer_forces_in_plane": 1e5}
    for pull, expect in (([0.0, 0.0, -0.005], 0.0), ([0.0005, 0.0, 0.0], 0.0005**2 / 4)):  # 2 layers × (x, y)
        pred = ref.clone()
        pred[layer == 1] += torch.tensor(pull, dtype=torch.float64)
        _, parts = total_loss({"forces": pred}, b, weights)
        assert "layer_forces" not in parts
        assert parts["layer_forces_in_plane"].item() == pytest.approx(expect, rel=1e-9, abs=1e-30)


def test_out_of_plane_force_loss_and_virial_loss():
    """forces_out_of_plane weighs only the components normal to the layers; the virial loss is the MSE per atom
    over the structures that have the label (NaN = another dataset without it)."""
    layer = torch.tensor([0] * 25 + [1] * 25)
    ref = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.5
    b = _Batch(ref, layer, torch.zeros(50, dtype=torch.long))
    pred = ref.clone()
    pred[:, 0] += 0.01  # in-plane error only
    _, parts = total_loss({"forces": pred}, b, {"forces": 10.0, "forces_out_of_plane": 40.0})
    assert parts["forces_out_of_plane"].item() == 0.0 and parts["forces"].item() == pytest.approx(1e-4 / 3)
    pred[:, 2] += 0.02
    _, parts = total_loss({"forces": pred}, b, {"forces": 10.0, "forces_out_of_plane": 40.0})
    assert parts["forces_out_of_plane"].item() == pytest.approx(4e-4)

    two = _Batch(torch.zeros(100, 3, dtype=torch.float64), torch.tensor(([0] * 25 + [1] * 25) * 2),
                 torch.tensor([0] * 50 + [1] * 50))
    two.virial = torch.stack([torch.eye(3, dtype=torch.float64), torch.full((3, 3), float("nan"), dtype=torch.float64)])
    pred_w = torch.zeros(2, 3, 3, dtype=torch.float64, requires_grad=True)
    loss, parts = total_loss({"forces": two.forces, "virial": pred_w}, two, {"forces": 1.0, "virial": 100.0})
    assert parts["virial"].item() == pytest.approx(3 * (1 / 50) ** 2 / 9)  # graph 0's nine components only
    loss.backward()
    assert torch.isfinite(pred_w.grad).all() and (pred_w.grad[1] == 0).all()
