"""The binding loss: energy differences between the training split's rigid-layer cells of one dataset — which cells
it takes, its value and gradient, that it moves a model's binding curve, and the refusal without rigid cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_runner import TINY_TRAIN, run_cli, tiny_xtb_dataset
from test_dispersion import bilayer, forces_model

from hedgenet.training.binding import BindingSet, binding_loss, binding_pair, binding_sets, energy_per_atom


def test_binding_sets_take_the_training_splits_rigid_cells_per_dataset():
    def sample(kind, dataset, energy, n=4):
        return {"kind": kind, "dataset": dataset, "energy": energy, "numbers": np.full(n, 6)}

    samples = [sample("rigid", "a.h5", -8.0), sample("rattle", "a.h5", -7.0), sample("rigid", "a.h5", -12.0),
               sample("rigid", "b.h5", -4.0), sample("rigid", "a.h5", -16.0), sample("rigid", "c.h5", -1.0),
               sample("rigid", "c.h5", -2.0)]
    train = [0, 1, 2, 3, 5, 6]  # cell 4 is a validation cell: never a target
    sets = binding_sets(samples, train, [f"g{i}" for i in train])
    assert [(s.dataset, s.graphs) for s in sets] == [("a.h5", ["g0", "g2"]), ("c.h5", ["g5", "g6"])]  # b: one cell
    assert sets[0].energy_eV_atom.tolist() == [-2.0, -3.0]  # eV per atom


def test_binding_pairs_are_two_cells_fixed_by_seed_and_probe():
    pairs = [binding_pair(5, 7, p) for p in range(200)]
    assert all(a != b for a, b in pairs) and pairs == [binding_pair(5, 7, p) for p in range(200)]
    assert len(set(pairs)) == 20  # every ordered pair of 5 cells turns up
    assert pairs != [binding_pair(5, 8, p) for p in range(200)]


def two_cells(dz=(0.0, 1.0), reference=(-7.00, -6.99)):
    return BindingSet("x.h5", [forces_model(12.0).graph_builder()(bilayer(2, z)) for z in dz], np.asarray(reference))


def test_binding_loss_is_the_squared_error_of_the_energy_difference_and_leaves_the_absolute_energy_alone():
    model, bset = forces_model(12.0), two_cells()
    e = [float(energy_per_atom(model, g)) for g in bset.graphs]
    loss = binding_loss(model, bset, 0, 1)
    assert float(loss.detach()) == pytest.approx(((e[0] - e[1]) - (-0.01)) ** 2, rel=1e-10)
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    # a constant energy per atom cancels in the difference and in its gradient: the absolute energy is left alone
    shift = model.energy_shift.grad
    assert shift is None or float(shift.abs().max()) < 1e-12 * float(loss.detach()) ** 0.5


def test_binding_loss_moves_the_models_binding_curve_to_the_reference():
    """A few Adam steps on the binding loss alone bring the model's E(+1 Å) − E(d₀) to a reference difference."""
    torch.manual_seed(0)
    model, bset = forces_model(12.0), two_cells(reference=(-7.000, -6.985))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.01)
    errors = []
    for step in range(150):
        a, b = binding_pair(2, 0, step)
        opt.zero_grad()
        loss = binding_loss(model, bset, a, b)
        loss.backward()
        opt.step()
        errors.append(float(loss.detach()) ** 0.5)
    e = [float(energy_per_atom(model, g)) for g in bset.graphs]
    assert abs((e[1] - e[0]) - 0.015) < 0.1 * errors[0] and errors[0] > 1e-3


def test_binding_loss_without_rigid_cells_is_refused_with_the_fix(tmp_path, tiny_dataset):
    proc, _ = run_cli("hedgenet-train", tmp_path, "binding",
                      [f"data.paths=[{tiny_dataset}]", *TINY_TRAIN, "train.loss_weights.binding=1000"], check=False)
    assert proc.returncode != 0
    assert "two rigid-layer cells in the training split" in proc.stderr and "dataset.rigid.shifts_A" in proc.stderr


def test_training_with_the_binding_loss_on_rigid_cells(tmp_path):
    """hedgenet-train with rigid-layer cells in the data: the loss is logged and the run says which cells it took."""
    data = tiny_xtb_dataset(tmp_path, "rigid", n_samples=2,
                            rigid_shifts_A=[[0, 0, dz] for dz in (-0.1, 0.1, 0.3, 0.6, 1.0, 1.6)])
    proc, run = run_cli("hedgenet-train", tmp_path, "binding",
                        [f"data.paths=[{data}]", *TINY_TRAIN, "train.loss_weights.binding=1000"])
    assert "binding loss:" in proc.stderr and "rigid-layer cells in 1 dataset(s)" in proc.stderr
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert np.isfinite(history[-1]["train/mse_binding"])
