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
