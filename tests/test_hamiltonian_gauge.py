"""The Hamiltonian gauge (``train.hamiltonian_gauge=fermi``): the H head learns H − E_F·S and the model returns
H = (H − E_F·S) + E_F·S, so an error δS of the overlap moves a state ε by (E_F − ε)·⟨δS⟩ instead of −ε·⟨δS⟩ —
nothing at the Fermi level, where bands, couplings and v_F live. On the tiny xTB dataset (4×4 AB bilayer
graphene, E_F ≈ −9.8 eV)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.linalg import eigh

from hedgenet.models import HedgeNet
from hedgenet.models.base import fermi_level_eV
from hedgenet.models.io import load_model, save_model
from hedgenet.orbitals.bloch import bloch_matrix
from hedgenet.training.data import load_samples
from hedgenet.training.losses import total_loss
from hedgenet.training.run import set_hamiltonian_gauge

KW = dict(size={"channels": 4, "lmax": 1, "num_layers": 1}, task="joint", block_cutoff=3.5, r_intra=3.0,
          r_inter=3.5, dtype="float64")


@pytest.fixture(scope="module")
def labelled(tiny_dataset):
    samples, layout, _ = load_samples([tiny_dataset])
    return samples, layout


def model_and_graphs(labelled, gauge: str):
    samples, layout = labelled
    torch.manual_seed(0)
    model = HedgeNet([6], layout=layout, **KW)
    graphs = [model.graph_builder()(s) for s in samples]
    set_hamiltonian_gauge(model, gauge, graphs)
    model.init_statistics(graphs)
    return model, graphs


def gamma_levels(model, graph) -> np.ndarray:
    """The model's Γ-point levels (eV) of the labelled cell."""
    pred = model(graph)
    n_orb = np.array([model.layout.n_orb(int(z)) for z in np.asarray(model.elements)[graph.species.numpy()]])
    idx, shift = graph.block_index.numpy(), graph.block_shift.numpy()
    H = bloch_matrix(pred["H"].detach().numpy(), idx, shift, n_orb)
    S = bloch_matrix(pred["S"].detach().numpy(), idx, shift, n_orb)
    return eigh(H, S, eigvals_only=True)


def test_fermi_level_of_the_labelled_cell_is_graphenes(labelled):
    model, graphs = model_and_graphs(labelled, "fermi")
    e = fermi_level_eV(graphs[0], model.layout, model.elements)
    assert -10.3 < e < -9.3, e  # xTB's charge-neutrality level of AB bilayer graphene: −9.81 eV
    assert float(model.hamiltonian_shift_eV) == pytest.approx(e)
    assert float(model_and_graphs(labelled, "none")[0].hamiltonian_shift_eV) == 0.0
    with pytest.raises(ValueError, match="hamiltonian_gauge"):
        set_hamiltonian_gauge(model, "fermy", graphs)


def test_the_model_returns_the_head_plus_the_shifted_overlap(labelled):
    model, graphs = model_and_graphs(labelled, "fermi")
    e = float(model.hamiltonian_shift_eV)
    plain = copy.deepcopy(model)
    plain.hamiltonian_shift_eV.fill_(0.0)
    with_shift, head = model(graphs[0]), plain(graphs[0])
    assert torch.allclose(with_shift["H"], head["H"] + e * head["S"], atol=1e-12)
    assert torch.equal(with_shift["S"], head["S"])


def test_the_h_loss_is_on_h_minus_e_s_and_does_not_train_the_overlap(labelled):
    model, graphs = model_and_graphs(labelled, "fermi")
    e = float(model.hamiltonian_shift_eV)
    g = graphs[0]
    pred = model(g, training=True)
    loss, parts = total_loss(pred, g, {"H": 1.0}, e)
    m = g.block_mask
    expected = (((pred["H"] - e * pred["S"]) - (g.H - e * g.S))[m] ** 2).mean()
    assert float(parts["H"].detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in model.head_S.parameters())
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in model.head_blocks.parameters())


def test_the_on_site_h_loss_is_the_mse_of_the_on_site_blocks_alone(labelled):
    """train.loss_weights.H_onsite: the MSE of H − E·S over the on-site blocks' real elements only, added to (not
    replacing) the H term, and trained through the block head; weight 0 adds nothing."""
    model, graphs = model_and_graphs(labelled, "fermi")
    e = float(model.hamiltonian_shift_eV)
    g = graphs[0]
    pred = model(g, training=True)
    m = g.block_mask & (g.block_kind == 0)[:, None, None]
    assert 0 < int((g.block_kind == 0).sum()) < g.block_kind.numel()
    expected = (((pred["H"] - e * pred["S"]) - (g.H - e * g.S))[m] ** 2).mean()
    loss, parts = total_loss(pred, g, {"H": 1.0, "H_onsite": 30.0}, e)
    assert float(parts["H_onsite"].detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    assert float(loss.detach()) == pytest.approx(float((parts["H"] + 30.0 * parts["H_onsite"]).detach()), rel=1e-12)
    only, parts = total_loss(pred, g, {"H_onsite": 1.0}, e)  # alone: the head still trains on it
    assert set(parts) == {"H_onsite"}
    only.backward()
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in model.head_blocks.parameters())
    assert "H_onsite" not in total_loss(pred, g, {"H": 1.0, "H_onsite": 0.0}, e)[1]


def test_an_overlap_error_leaves_the_states_at_the_fermi_level_in_place(labelled):
    """A 1 % error of every off-site overlap: in the fermi gauge the levels within 1 eV of E_F move by
    (E_F − ε)·⟨δS⟩, at most a tenth of what they move by when H is learned itself (−ε·⟨δS⟩, ε ≈ −10 eV)."""
    moved = {}
    for gauge in ("fermi", "none"):
        model, graphs = model_and_graphs(labelled, gauge)
        before = gamma_levels(model, graphs[0])
        with torch.no_grad():
            model.head_S.scale.mul_(1.01)
        after = gamma_levels(model, graphs[0])
        e_f = fermi_level_eV(graphs[0], model.layout, model.elements)
        near = np.abs(before - e_f) < 1.0
        assert near.sum() >= 4
        moved[gauge] = np.abs(after - before)[near].max()
    assert moved["none"] > 0.01, moved  # eV
    assert moved["fermi"] < 0.1 * moved["none"], moved


def test_model_files_keep_the_shift_and_older_files_load_without_one(labelled, tmp_path):
    samples, layout = labelled
    model, graphs = model_and_graphs(labelled, "fermi")
    kwargs = {"elements": [6], "layout": layout.to_json(), **KW}
    path = save_model(tmp_path / "model.pt", "hedgenet", kwargs, model)
    again = load_model(path)
    assert float(again.hamiltonian_shift_eV) == pytest.approx(float(model.hamiltonian_shift_eV))
    assert torch.allclose(again(graphs[0])["H"], model(graphs[0])["H"], atol=1e-10)
    data = torch.load(path, weights_only=True)
    del data["state_dict"]["hamiltonian_shift_eV"]  # as written before the gauge existed
    torch.save(data, tmp_path / "old.pt")
    assert float(load_model(tmp_path / "old.pt").hamiltonian_shift_eV) == 0.0
