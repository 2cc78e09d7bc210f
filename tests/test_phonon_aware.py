"""The phonon-aware active-learning score (hedgenet/training/phonon_aware.py): its last-layer Jacobian gives the
model's own forces, its probe curvatures the model's own force constants along the patterns, and its greedy
batch is the one that most reduces the targets' posterior variance (checked against a brute-force search).
Tiny float64 models on 2×2 AB bilayer cells; no reference runs (the CLI test in test_active.py runs it on xTB
labels)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hedgenet.models import HedgeNet
from hedgenet.models.base import hessian_vector_products
from hedgenet.structures import build_structure, make_supercell
from hedgenet.training.phonon_aware import (
    force_jacobian,
    greedy_picks,
    phonon_aware_picks,
    probe_curvatures,
    probe_vectors,
    readout_weights,
)


@pytest.fixture(scope="module")
def model_and_cells():
    torch.manual_seed(0)
    model = HedgeNet([6], size={"channels": 4, "lmax": 1, "num_layers": 2}, task="forces", r_intra=3.0,
                     r_inter=4.0, dtype="float64")
    with torch.no_grad():
        model.energy_scale.fill_(0.7)  # θ carries the species' energy scale: not 1, so that a missing factor shows
    relaxed = make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35), np.diag([2, 2, 1]))
    cells = []
    for seed in range(5):
        atoms = relaxed.copy()
        atoms.rattle(0.02 + 0.02 * seed, seed=seed)
        cells.append(atoms)
    builder = model.graph_builder()
    return model, builder.from_atoms(relaxed), [builder.from_atoms(a) for a in cells]


def test_the_jacobian_gives_the_models_forces(model_and_cells):
    model, _, cells = model_and_cells
    for graph in cells[:2]:
        forces = model(graph)["forces"].numpy().ravel()
        assert np.allclose(-force_jacobian(model, graph).T @ readout_weights(model), forces, atol=1e-10)


def test_probe_curvatures_are_the_models_force_constants_along_the_patterns(model_and_cells):
    model, relaxed, _ = model_and_cells
    vectors = probe_vectors(relaxed.pos.shape[0], 3, seed=1)
    assert np.allclose(np.mean(np.sum(vectors**2, axis=-1), axis=-1), 1.0)  # unit RMS displacement per atom
    curvature = readout_weights(model) @ probe_curvatures(model, relaxed, vectors)
    hv = hessian_vector_products(model, relaxed, torch.as_tensor(vectors)).numpy()
    exact = np.einsum("kna,kna->k", vectors, hv)  # vᵀΦv, eV/Å²
    assert np.allclose(curvature, exact, rtol=1e-3), (curvature, exact)  # finite differences: O(step²)


def target_variance(precision, targets):
    return float(np.trace(targets.T @ np.linalg.solve(precision, targets)))


def test_greedy_picks_reduce_the_target_variance_as_the_posterior_says():
    rng = np.random.default_rng(0)
    d = 4
    jac = [rng.standard_normal((d, 6)) * s for s in (0.2, 1.0, 0.5, 1.0, 0.1)]
    jac[3][2:] = 0.0  # informative only on the first two directions
    information = [j @ j.T for j in jac]
    labelled = sum(information[:1]) + np.diag([5.0, 5.0, 0.0, 0.0])
    targets = np.zeros((d, 2))
    targets[2, 0] = targets[3, 1] = 1.0  # the target lives where the labelled cells say least
    picked, gains, history = greedy_picks(information, labelled, targets, 2, regularization=1e-3)
    precision = labelled + 1e-3 * np.trace(labelled) / d * np.eye(d)
    base = target_variance(precision, targets)
    brute = [base - target_variance(precision + info, targets) for info in information]
    assert np.allclose(gains, brute) and picked[0] == int(np.argmax(brute))
    assert 3 not in picked  # blind to the target's directions, however large its forces
    # each step takes the best single addition after the last; the pair found is the best pair here
    best_pair = max(itertools.combinations(range(5), 2),
                    key=lambda p: -target_variance(precision + information[p[0]] + information[p[1]], targets))
    assert set(picked) == set(best_pair)
    assert history[0] == pytest.approx(base) and history[-1] < history[1] < history[0]
    assert history[-1] == pytest.approx(target_variance(precision + information[picked[0]] + information[picked[1]],
                                                        targets))
    with pytest.raises(ValueError, match="must be > 0"):
        greedy_picks(information, labelled, targets, 1, regularization=0.0)


def test_picks_on_a_model(model_and_cells):
    model, relaxed, cells = model_and_cells
    out = phonon_aware_picks(model, cells[1:], cells[:1], relaxed, 2, n_probes=4, seed=0)
    assert len(set(out["picked"])) == 2 and len(out["gains"]) == 4 and np.all(out["gains"] >= -1e-12)
    assert out["variance"][0] > out["variance"][1] > out["variance"][2] > 0
    with pytest.raises(ValueError, match="no labelled cells"):
        phonon_aware_picks(model, cells, [], relaxed, 1)
