"""The force-constant loss: reference force constants stored with a dataset, the model's exact Hessian–vector
products, the loss's gradient through them, and the errors a wrong setup gets.

Tiny float64 models on 2×2 AB bilayer cells (16 atoms); no reference runs (the labelling test checks the stored
xTB force constants against xTB's own forces).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from hedgenet.calculators.autograd import autograd_force_constants
from hedgenet.data.store import DatasetError, DatasetStore
from hedgenet.graphs import collate, subsample_block_edges
from hedgenet.models import HedgeNet
from hedgenet.models.base import hessian_vector_products
from hedgenet.structures import build_structure, make_supercell
from hedgenet.structures.supercell import primitive_cell
from hedgenet.training.force_constants import (
    ForceConstantTarget,
    force_constant_errors,
    force_constant_metrics,
    interlayer_mode_errors,
    layer_translation_vectors,
    load_force_constant_targets,
    predict_with_probes,
    probe_vectors,
    rigid_layer_frequencies_THz,
)
from hedgenet.training.module import TrainingModule

TINY = {"channels": 4, "lmax": 1, "num_layers": 2}


def forces_model(seed: int) -> HedgeNet:
    torch.manual_seed(seed)
    return HedgeNet([6], size=TINY, task="forces", r_intra=3.0, r_inter=4.0, dtype="float64")


@pytest.fixture(scope="module")
def bilayer():
    atoms = make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35), np.diag([2, 2, 1]))
    atoms.rattle(0.02, seed=3)  # off the symmetric positions: every Hessian element is generic
    return atoms


def probe_loss(model, probe) -> torch.Tensor:
    """A probe's loss from the model's forces on its displaced copies, evaluated on their own."""
    return probe.loss(probe.forces(model))


def target_of(model, atoms) -> ForceConstantTarget:
    """A target holding ``model``'s own exact Hessian (eV/Å²) at ``atoms``."""
    n = len(atoms)
    phi = autograd_force_constants(model, atoms).transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    return ForceConstantTarget("in memory", atoms, model.graph_builder().from_atoms(atoms), torch.as_tensor(phi))


def test_hessian_vector_products_are_the_models_exact_hessian_times_the_pattern(bilayer):
    model = forces_model(0)
    t = target_of(model, bilayer)
    v = probe_vectors(len(bilayer), 3, seed=7)
    hv = hessian_vector_products(model, t.graph, v, create_graph=False)
    expected = (v.reshape(3, -1) @ t.matrix.T).reshape(v.shape)
    assert torch.allclose(hv, expected, atol=1e-10)
    assert float(expected.abs().max()) > 1e-3  # not a trivially zero Hessian
    # central differences (the training loss, with the reference's step) converge to it as O(step²)
    def fd_error(step):
        fd = hessian_vector_products(model, t.graph, v, create_graph=False, step_A=step)
        return float((fd - expected).norm() / expected.norm())

    assert fd_error(0.001) < 1e-3 and fd_error(0.001) < fd_error(0.01) / 30
    # the model against its own Hessian: no error; against another model's: a clear one
    assert float(force_constant_errors(model, t, v).abs().max()) < 1e-10
    other = forces_model(1)
    assert float(force_constant_errors(other, t, v).abs().mean()) > 1e-3
    # the metric over all elements agrees: zero for the model itself
    assert force_constant_metrics(model, [t])["force_constants_mae_eV_A2"] < 1e-10
    assert force_constant_metrics(other, [t])["force_constants_mae_eV_A2"] > 1e-4
    # probe patterns are fixed by their seed (a resumed run draws the same ones)
    assert torch.equal(probe_vectors(16, 2, seed=5), probe_vectors(16, 2, seed=5))
    assert not torch.equal(probe_vectors(16, 2, seed=5), probe_vectors(16, 2, seed=6))


def test_relative_errors_are_measured_in_the_references_own_metric(bilayer):
    """A model whose energy landscape is 10 % stiffer everywhere (energy scale × 1.1) has a relative error of 0.1 in
    every mode, soft or stiff: |Φ|^(−1/2)·0.1Φ·|Φ|^(−1/2)v = 0.1·v on the space of the non-zero modes (with the sign
    of each mode's λ)."""
    teacher = forces_model(0)
    t = target_of(teacher, bilayer)
    stiffer = forces_model(0)
    with torch.no_grad():
        stiffer.energy_scale.mul_(1.1)
    v = probe_vectors(len(bilayer), 2, seed=3)
    lam, vec = torch.linalg.eigh(t.matrix)
    keep = lam.abs() > 1e-6 * lam.abs().max()  # translations removed; an untrained model has some λ < 0 here
    projected = ((v.reshape(2, -1) @ vec[:, keep]) * lam[keep].sign() @ vec[:, keep].T).reshape(v.shape)
    rel = force_constant_errors(stiffer, t, v, relative=True)
    assert torch.allclose(rel, 0.1 * projected, atol=1e-8)
    absolute = force_constant_errors(stiffer, t, v)  # the absolute error instead is dominated by the stiff modes
    assert torch.allclose(absolute, 0.1 * (v.reshape(2, -1) @ t.matrix.T).reshape(v.shape), atol=1e-8)


def test_the_loss_trains_the_models_force_constants_toward_the_targets(bilayer):
    """Gradient through the Hessian–vector products (third derivatives of the energy): a student model trained on
    the force-constant loss alone moves its whole Hessian toward a teacher's."""
    teacher, student = forces_model(0), forces_model(1)
    t = target_of(teacher, bilayer)
    before = force_constant_metrics(student, [t])["force_constants_mae_eV_A2"]
    module = TrainingModule(student, {"force_constants": 1.0}, {"name": "adam", "lr": 0.01},
                            force_constant_targets=[t], force_constant_probes={"n_vectors": 2})
    opt = torch.optim.Adam(student.parameters(), lr=0.01)
    for step in range(40):
        opt.zero_grad()
        loss = probe_loss(student, module._force_constant_probe(step, "absolute"))
        loss.backward()
        opt.step()
    after = force_constant_metrics(student, [t])["force_constants_mae_eV_A2"]
    assert after < 0.5 * before, (before, after)


def test_store_keeps_force_constants_and_adds_them_to_an_older_file(tmp_path, bilayer):
    atoms = bilayer.copy()
    atoms.arrays["layer"] = np.asarray(atoms.arrays["layer"], dtype=np.int64)
    n = len(atoms)
    fc = np.random.default_rng(0).normal(size=(n, n, 3, 3))
    with_fc = DatasetStore(tmp_path / "with.h5")
    with_fc.create({"fingerprint": "x"}, atoms, force_constants=(fc, 0.01))
    assert np.array_equal(with_fc.read_force_constants(), fc) and with_fc.force_constants_displacement_A() == 0.01
    assert "force_constants" not in with_fc.read_reference()
    older = DatasetStore(tmp_path / "older.h5")
    older.create({"fingerprint": "x"}, atoms)
    assert older.read_force_constants() is None
    older.add_force_constants(fc, 0.01)
    assert np.array_equal(older.read_force_constants(), fc)
    with pytest.raises(DatasetError, match=r"do not fit the 16-atom reference supercell"):
        DatasetStore(tmp_path / "bad.h5").create({"fingerprint": "x"}, atoms, force_constants=(fc[:8], 0.01))
    # force constants of another cell (dataset.force_constants_supercell) are stored with that cell
    big = make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35), np.diag([3, 3, 1]))
    fc_big = np.random.default_rng(1).normal(size=(36, 36, 3, 3))
    older.add_force_constants(fc_big, 0.01, big)
    assert older.force_constants_atoms() == 36 and np.array_equal(older.read_force_constants(), fc_big)
    assert np.array_equal(older.read_force_constants_cell()["positions"], big.positions)
    assert len(older.read_reference()["numbers"]) == n  # the labelling cell is unchanged
    with pytest.raises(DatasetError, match=r"do not fit the 36-atom force-constant cell"):
        older.add_force_constants(fc, 0.01, big)
    assert older.force_constants_atoms() == 36  # a refused replacement leaves the file as it was
    # targets: one per file that stores them, rows and columns (atom, direction)
    model = forces_model(0)
    (t,) = load_force_constant_targets([tmp_path / "with.h5"], model)
    assert t.matrix.shape == (3 * n, 3 * n) and float(t.matrix[3 * 2 + 1, 3 * 5 + 0]) == fc[2, 5, 1, 0]


def test_a_force_constant_weight_without_stored_force_constants_trains_without_them_and_says_so(tmp_path, bilayer, capsys):
    from hedgenet.config import ConfigError
    from hedgenet.training.run import force_constant_targets

    DatasetStore(tmp_path / "plain.h5").create({"fingerprint": "x"}, bilayer)
    cfg = OmegaConf.create({"data": {"paths": [str(tmp_path / "plain.h5")]},
                            "train": {"loss_weights": {"force_constants": 0.1},
                                      "force_constants": {"every_n_steps": 1, "n_vectors": 1,
                                                          "interlayer_every_n_steps": 1}}})
    assert force_constant_targets(cfg, forces_model(0)) == []  # trains without the term, and says so
    err = capsys.readouterr().err
    assert "training without the force-constant loss" in err and "dataset.force_constants=true" in err
    cfg.train.force_constants.every_n_steps = 0
    with pytest.raises(ConfigError, match=r"every_n_steps, interlayer_every_n_steps and n_vectors must be ≥ 1"):
        force_constant_targets(cfg, forces_model(0))
    cfg.train.loss_weights.force_constants = 0.0  # off: nothing is read
    assert force_constant_targets(cfg, forces_model(0)) == []


def test_interlayer_probes_are_the_rigid_layer_translations_at_their_own_scale(bilayer):
    """The interlayer-mode probes: layer 1 moved rigidly against layer 0 along x, y, z with the centre of mass
    fixed; a 10 %-stiffer model has relative error exactly 0.1 on each and rigid-pattern frequencies √1.1 times
    the teacher's; a single layer has none."""
    v = layer_translation_vectors(bilayer)
    layer = np.asarray(bilayer.arrays["layer"])
    assert v.shape == (3, len(bilayer), 3)
    for d in range(3):
        assert bool((v[d, layer == 1, d] == 0.5).all()) and bool((v[d, layer == 0, d] == -0.5).all())
        assert float(v[d].sum(dim=0).abs().max()) < 1e-12  # equal masses: no net translation
        assert float(v[d][:, [k for k in range(3) if k != d]].abs().max()) == 0.0
    assert len(layer_translation_vectors(bilayer[layer == 0])) == 0
    teacher = forces_model(0)
    t = target_of(teacher, bilayer)
    stiffer = forces_model(0)
    with torch.no_grad():
        stiffer.energy_scale.mul_(1.1)
    assert torch.allclose(interlayer_mode_errors(teacher, t, [0, 1, 2]), torch.zeros(3, dtype=torch.float64),
                          atol=1e-3)  # central differences with the 0.01 Å step
    assert torch.allclose(interlayer_mode_errors(stiffer, t, [0, 1, 2]), torch.full((3,), 0.1, dtype=torch.float64),
                          atol=1e-3)
    ref = rigid_layer_frequencies_THz(t.matrix.numpy().reshape(16, 3, 16, 3).transpose(0, 2, 1, 3), bilayer)
    stiff = force_constant_metrics(stiffer, [t])["rigid_interlayer_modes_THz"]
    assert stiff["reference"] == pytest.approx(ref)
    assert np.abs(ref).min() > 1e-3
    assert np.allclose(stiff["model"], np.sqrt(1.1) * np.asarray(ref), rtol=1e-8)


def test_interlayer_probes_on_the_primitive_cell_equal_those_on_the_supercell():
    """The rigid interlayer patterns are the same on every image of the primitive cell, so their Φv on the 4-atom
    primitive cell is the supercell's at any image: the probe errors agree to round-off, at a fraction of the
    cost. A rattled cell has no translations and is its own primitive cell."""
    atoms = make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35), np.diag([4, 4, 1]))
    prim, orbit = primitive_cell(atoms)
    assert len(prim) == 4 and np.bincount(orbit).tolist() == [16] * 4
    assert sorted(prim.arrays["layer"].tolist()) == [0, 0, 1, 1]
    assert abs(prim.get_volume() * 16 - atoms.get_volume()) < 1e-6
    assert np.allclose(layer_translation_vectors(prim)[:, orbit], layer_translation_vectors(atoms))
    rattled = atoms.copy()
    rattled.rattle(0.02, seed=1)
    assert len(primitive_cell(rattled)[0]) == len(atoms)

    teacher, stiffer = forces_model(0), forces_model(0)
    with torch.no_grad():
        stiffer.energy_scale.mul_(1.1)
    t = target_of(teacher, atoms)
    t_prim = dataclasses.replace(t, primitive_graph=teacher.graph_builder().from_atoms(prim), orbit=orbit)
    assert t_prim.interlayer_probes[0] is t_prim.primitive_graph
    for model in (teacher, stiffer, forces_model(1)):
        on_supercell = interlayer_mode_errors(model, t, [0, 1, 2])
        on_primitive = interlayer_mode_errors(model, t_prim, [0, 1, 2])
        assert torch.allclose(on_supercell, on_primitive, rtol=1e-8, atol=1e-10), (on_supercell, on_primitive)
    assert torch.allclose(interlayer_mode_errors(stiffer, t_prim, [0, 1, 2]), torch.full((3,), 0.1, dtype=torch.float64),
                          atol=1e-3)


def test_the_interlayer_loss_trains_the_rigid_layer_frequencies_toward_the_targets(bilayer):
    teacher, student = forces_model(0), forces_model(1)
    t = target_of(teacher, bilayer)

    def error():
        f = force_constant_metrics(student, [t])["rigid_interlayer_modes_THz"]
        return np.abs(np.asarray(f["model"]) - f["reference"]).max()

    before = error()
    module = TrainingModule(student, {"interlayer_modes": 1.0}, {"name": "adam", "lr": 0.01},
                            force_constant_targets=[t])
    opt = torch.optim.Adam(student.parameters(), lr=0.01)
    for step in range(60):
        opt.zero_grad()
        probe_loss(student, module._force_constant_probe(step, "interlayer")).backward()
        opt.step()
    assert error() < 0.3 * before, (before, error())


def test_probe_schedule_alternates_random_and_interlayer_probes(bilayer):
    t = target_of(forces_model(0), bilayer)

    def schedule(every, interlayer_every, steps=6):
        module = TrainingModule(forces_model(0), {"force_constants": 0.1, "interlayer_modes": 1.0},
                                {"name": "adam", "lr": 0.01}, force_constant_targets=[t],
                                force_constant_probes={"every_n_steps": every, "interlayer_every_n_steps": interlayer_every})
        return [[(kind, probe) for _, kind, probe in module.probes_due(s)] for s in range(steps)]

    assert schedule(1, 1) == [[("absolute", s), ("interlayer", s)] for s in range(6)]
    # one probe per step, in turn; the interlayer probe index walks through x, y, z
    assert schedule(2, 2) == [[("absolute", 0)], [("interlayer", 0)], [("absolute", 1)], [("interlayer", 1)],
                              [("absolute", 2)], [("interlayer", 2)]]
    assert [len(p) for p in schedule(1, 3)] == [1, 1, 2, 1, 1, 2]


def test_with_an_inversion_centre_one_displaced_copy_per_probe_gives_the_two_copy_loss_and_gradients():
    """AB bilayer 2×2 (centrosymmetric): the inversion partners map every atom onto its image 2c − r; the training
    probe's patterns are equal on partners and evaluate one displaced copy each (the −δv copy is the +δv one
    inverted); its Φv, loss and parameter gradient equal the two-copy probe's of the same patterns (an equivariant
    model with the interlayer registry, float64). A rattled cell has no inversion and keeps two copies."""
    from hedgenet.training.force_constants import force_constant_probe, inversion_even, inversion_partners

    atoms = make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35), np.diag([2, 2, 1]))
    n = len(atoms)
    sigma = inversion_partners(atoms)
    assert sigma is not None and (sigma[sigma] == np.arange(n)).all() and (sigma != np.arange(n)).all()
    centre = (atoms.positions[0] + atoms.positions[sigma[0]]) / 2  # atom σ(a) at 2c − r_a up to lattice vectors
    frac = np.linalg.solve(atoms.cell.array.T, (atoms.positions[sigma] - (2 * centre - atoms.positions)).T).T
    assert np.allclose(frac - np.round(frac), 0, atol=1e-8)
    rattled = atoms.copy()
    rattled.rattle(0.01, seed=1)
    assert inversion_partners(rattled) is None

    torch.manual_seed(0)
    model = HedgeNet([6], size=TINY, task="forces", r_intra=3.0, r_inter=4.0, dtype="float64",
                     registry_widths=[0.4, 1.1])
    phi = torch.as_tensor(np.random.default_rng(0).normal(size=(3 * n,) * 2))
    t = ForceConstantTarget("in memory", atoms, model.graph_builder().from_atoms(atoms), phi + phi.T, 0.01)
    v = probe_vectors(n, 2, 7)
    one = force_constant_probe(t, v, inversion_pairs=True)
    two = force_constant_probe(t, inversion_even(v, t.inversion_partners), inversion_pairs=False)
    assert len(one.copies()) == 2 and len(two.copies()) == 4
    assert torch.equal(one.vectors, one.vectors[:, t.inversion_partners]) and torch.allclose(one.vectors, two.vectors)

    def run(probe):
        model.zero_grad()
        forces = probe.forces(model)
        loss = probe.loss(forces)
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return probe.hessian_vector_products(forces).detach(), loss.detach(), grad

    (hv1, loss1, grad1), (hv2, loss2, grad2) = run(one), run(two)
    assert torch.allclose(hv1, hv2, rtol=1e-9, atol=1e-10) and float(hv2.abs().max()) > 1.0
    assert torch.allclose(loss1, loss2, rtol=1e-10) and torch.allclose(grad1, grad2, rtol=1e-8, atol=1e-12)
    # the training module uses it by default and can be told not to
    module = lambda **kw: TrainingModule(model, {"force_constants": 1.0}, {"name": "adam", "lr": 0.01},
                                         force_constant_targets=[t], force_constant_probes=kw)
    assert len(module()._force_constant_probe(0, "absolute").copies()) == 1
    assert len(module(inversion_pairs=False)._force_constant_probe(0, "absolute").copies()) == 2
    assert len(force_constant_probe(dataclasses.replace(t, atoms=rattled), v, inversion_pairs=True).copies()) == 4


def test_cosine_schedule_over_the_plateau_defaults():
    """train.scheduler.name=cosine on top of conf/train.yaml's plateau keys (factor, patience, monitor): those do
    not apply and are left out; a key that fits neither schedule is named."""
    import lightning as L

    def optimizers(scheduler):
        module = TrainingModule(forces_model(0), {"forces": 1.0}, {"name": "adam", "lr": 0.01}, scheduler)
        module.trainer = L.Trainer(max_epochs=4, logger=False, enable_checkpointing=False)
        return module.configure_optimizers()

    out = optimizers({"name": "cosine", "factor": 0.5, "patience": 10, "monitor": "val/loss"})
    sched = out["lr_scheduler"]
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) and sched.T_max == 4 and sched.eta_min == 0
    assert optimizers({"name": "cosine", "eta_min": 1e-4})["lr_scheduler"].eta_min == 1e-4
    with pytest.raises(ValueError, match=r"\['warmup'\] do not apply to the cosine schedule"):
        optimizers({"name": "cosine", "warmup": 3})


def test_anneal_schedule_holds_the_rate_then_falls_over_the_last_epochs():
    """train.scheduler.name=anneal: the rate held for max_epochs − anneal_epochs epochs, then a cosine to eta_min
    over the last anneal_epochs (the cosine schedule's shape, started late); a missing or impossible
    anneal_epochs is refused naming the fix."""
    import lightning as L

    def optimizers(scheduler, max_epochs=10):
        module = TrainingModule(forces_model(0), {"forces": 1.0}, {"name": "adam", "lr": 0.01}, scheduler)
        module.trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False)
        return module.configure_optimizers()

    out = optimizers({"name": "anneal", "anneal_epochs": 4, "factor": 0.5, "patience": 10, "monitor": "val/loss"})
    opt, sched = out["optimizer"], out["lr_scheduler"]
    rates = []
    for _ in range(10):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    cosine = [0.01 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in range(4)]
    np.testing.assert_allclose(rates, [0.01] * 6 + cosine, rtol=1e-12)
    floor = optimizers({"name": "anneal", "anneal_epochs": 2, "eta_min": 1e-3}, max_epochs=2)
    o, s = floor["optimizer"], floor["lr_scheduler"]
    o.step(), s.step()
    assert o.param_groups[0]["lr"] == pytest.approx(1e-3 + 0.5 * (0.01 - 1e-3))
    for bad in ({"name": "anneal"}, {"name": "anneal", "anneal_epochs": 11}, {"name": "anneal", "anneal_epochs": 0}):
        with pytest.raises(ValueError, match=r"anneal_epochs=.*Fix: e.g. \+train.scheduler.anneal_epochs=2"):
            optimizers(bad)
    with pytest.raises(ValueError, match=r"\['warmup'\] do not apply to the anneal schedule"):
        optimizers({"name": "anneal", "anneal_epochs": 3, "warmup": 3})


def test_a_training_step_evaluates_its_probes_with_the_cell_in_one_pass_and_gets_the_separate_numbers(tiny_dataset):
    """The training step runs its training cell (H and S blocks, a quarter of them; virial labels) and the
    displaced copies of its force-constant probes (a random 2×2 pattern, a rigid interlayer translation on the
    primitive cell) through the model in one batch: predictions, probe losses and the parameter gradient equal
    those of separate passes."""
    from hedgenet.training.data import load_samples

    samples, layout, _ = load_samples([tiny_dataset])
    torch.manual_seed(0)
    model = HedgeNet([6], layout=layout, size=TINY, task="joint", block_cutoff=3.5, r_intra=3.0, r_inter=3.5,
                     dtype="float64")
    graph = model.graph_builder()(samples[0])
    model.init_statistics([graph])
    batch = subsample_block_edges(collate([graph]), 0.25, torch.Generator().manual_seed(0))
    assert batch.virial is not None and batch.block_index.shape[1] > 0
    atoms = make_supercell(build_structure("bilayer_graphene", a=2.46, d=3.35), np.diag([2, 2, 1]))
    prim, orbit = primitive_cell(atoms)
    phi = torch.as_tensor(np.random.default_rng(0).normal(size=(3 * len(atoms),) * 2))
    t = ForceConstantTarget("in memory", atoms, model.energy_graph(model.graph_builder().from_atoms(atoms)),
                            phi + phi.T, 0.01, model.energy_graph(model.graph_builder().from_atoms(prim)), orbit)
    module = TrainingModule(model, {"force_constants": 1.0, "interlayer_modes": 1.0}, {"name": "adam", "lr": 0.01},
                            force_constant_targets=[t])
    probes = [module._force_constant_probe(0, "absolute"), module._force_constant_probe(1, "interlayer")]

    def step(fused: bool):
        model.zero_grad()
        if fused:
            pred, forces = predict_with_probes(model, batch, probes)
            losses = [p.loss(f) for p, f in zip(probes, forces)]
        else:
            pred = model(batch, training=True)
            losses = [probe_loss(model, p) for p in probes]
        total = sum(losses) + pred["energy"].sum() + pred["forces"].square().sum() + pred["virial"].sum() \
            + pred["H"].square().sum() + pred["S"].sum()
        total.backward()
        return pred, torch.stack(losses), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    (fused, fused_losses, fused_grad), (apart, apart_losses, apart_grad) = step(True), step(False)
    assert set(fused) == set(apart)
    for key in apart:
        assert fused[key].shape == apart[key].shape, key
        assert torch.allclose(fused[key], apart[key], rtol=1e-10, atol=1e-12), key
    assert torch.allclose(fused_losses, apart_losses, rtol=1e-10) and bool((apart_losses > 0).all())
    assert torch.allclose(fused_grad, apart_grad, rtol=1e-8, atol=1e-12)
