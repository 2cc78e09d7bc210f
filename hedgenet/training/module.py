"""LightningModule for every model family (HedgeNet and the baselines): losses, metrics, optimiser, EMA.

The wrapped ``model(batch)`` returns a dict with any of ``energy`` (B,) eV, ``forces`` (N, 3) eV/Å,
``H`` (E, n_max, n_max) eV and ``S`` (E, n_max, n_max); the loss weights say which are trained.
Forces are −∂E/∂r by autograd, so validation and testing run with gradients enabled
(``Trainer(inference_mode=False)``).
"""

from __future__ import annotations

import copy
import math

import lightning as L
import torch

from hedgenet.graphs import subsample_block_edges
from hedgenet.models.dispersion import upgrade_state_dict
from hedgenet.training.losses import total_loss
from hedgenet.training.metrics import ErrorMetrics


FC_LOSSES = {"force_constants": "absolute", "force_constants_relative": "relative", "interlayer_modes": "interlayer"}
"""The force-constant loss weights of ``train.loss_weights`` and what each measures: Φv on random patterns in eV/Å²
(absolute) or in Φ's own metric (relative), or Φv of the rigid interlayer translations relative to the
reference's (interlayer; hedgenet.training.force_constants)."""


class ExponentialMovingAverage:
    """EMA of the model weights, swapped in for validation and testing. The decay warms up as
    min(decay, (1 + n)/(10 + n)) after n updates (as torch_ema and MACE do): with a fixed decay of 0.99 a
    run of a few hundred steps would still weigh the random initial weights by 0.99^n."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.num_updates = 0
        self.shadow = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1.0 - decay)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)


class TrainingModule(L.LightningModule):
    def __init__(
        self,
        model: torch.nn.Module,
        loss_weights: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        ema_decay: float | None = None,
        force_constant_targets: list | None = None,
        force_constant_probes: dict | None = None,
        seed: int = 0,
        coupling_targets: list | None = None,
        block_edge_fraction: float = 1.0,
        second_order_targets: list | None = None,
        binding_sets: list | None = None,
    ):
        super().__init__()
        self.model = model
        self.loss_weights = dict(loss_weights)
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler or {})
        self.ema = ExponentialMovingAverage(model, ema_decay) if ema_decay else None
        # the force-constant loss: reference Φ of undisplaced cells (hedgenet.training.force_constants), probed
        # with n_vectors random patterns every every_n_steps training steps
        # (absolute, eV/Å², and/or relative to Φ's own metric: FC_LOSSES)
        self.fc_losses = {k: kind for k, kind in FC_LOSSES.items() if self.loss_weights.get(k, 0) > 0}
        self.fc_targets = list(force_constant_targets or []) if self.fc_losses else []
        probes = dict(force_constant_probes or {})
        self.fc_every = int(probes.get("every_n_steps", 1))
        self.interlayer_every = int(probes.get("interlayer_every_n_steps", 1))
        self.fc_vectors = int(probes.get("n_vectors", 1))
        self.fc_inversion_pairs = bool(probes.get("inversion_pairs", True))
        self.seed = int(seed)
        self._fc_on_device = {}
        # the coupling loss: reference dH/du, dS/du of undisplaced cells (hedgenet.training.couplings), one stored
        # displacement per probe, in turn, every couplings_every_n_steps steps
        self.coupling_targets = list(coupling_targets or []) if self.loss_weights.get("couplings", 0) > 0 else []
        self.coupling_every = int(probes.get("couplings_every_n_steps", 1))
        # the second-order loss: the reference's even response of thermal ± pairs (hedgenet.training.couplings), one
        # stored pair per probe, in turn, every second_order_every_n_steps steps
        self.second_order_targets = (list(second_order_targets or []) if self.loss_weights.get("second_order", 0) > 0
                                     else [])
        self.second_order_every = int(probes.get("second_order_every_n_steps", 1))
        # the binding loss: energy differences between the training split's rigid-layer cells of one dataset
        # (hedgenet.training.binding), one pair per probe, every binding_every_n_steps steps
        self.binding_sets = list(binding_sets or []) if self.loss_weights.get("binding", 0) > 0 else []
        self.binding_every = int(probes.get("binding_every_n_steps", 1))
        # each training step's H and S losses on a random fraction of the block edges (drawn from (seed, step): a
        # resumed run draws the same ones); validation and testing see every edge
        if not 0.0 < float(block_edge_fraction) <= 1.0:
            raise ValueError(f"train.block_edge_fraction={block_edge_fraction} must be in (0, 1]. Fix: 1.0 trains on "
                             "every block edge, 0.25 on a quarter of them per step")
        self.block_edge_fraction = float(block_edge_fraction)
        quantities = tuple(k for k in ("energy", "forces", "H", "S") if k in model.outputs)
        self.val_metrics = ErrorMetrics(quantities)
        self.test_metrics = ErrorMetrics(quantities)

    # ----------------------------------------------------------------- steps
    @property
    def hamiltonian_shift_eV(self) -> float:
        """The model's Hamiltonian shift E (eV): its H head predicts H − E·S, on which the H loss is taken."""
        return float(getattr(self.model, "hamiltonian_shift_eV", 0.0))

    def forward(self, batch):
        return self.model(batch)

    def _eval_model(self):
        return self.ema.shadow if (self.ema is not None and not self.training) else self.model

    def training_step(self, batch, batch_idx):
        if self.block_edge_fraction < 1.0:
            batch = self.subsampled_blocks(batch, self.global_step)
        from hedgenet.training.force_constants import predict_with_probes

        probes = [(key, self._force_constant_probe(probe, kind))
                  for key, kind, probe in self.probes_due(self.global_step)]
        pred, probe_forces = predict_with_probes(self.model, batch, [p for _, p in probes if p is not None])
        loss, parts = total_loss(pred, batch, self.loss_weights, self.hamiltonian_shift_eV)
        forces = iter(probe_forces)
        for key, probe in probes:
            parts[key] = (torch.zeros((), dtype=self.model.dtype, device=self.device) if probe is None
                          else probe.loss(next(forces)))
            loss = loss + self.loss_weights[key] * parts[key]
        if self.coupling_targets and self.global_step % self.coupling_every == 0:
            parts["couplings"] = self._coupling_loss(self.global_step // self.coupling_every)
            loss = loss + self.loss_weights["couplings"] * parts["couplings"]
        if self.second_order_targets and self.global_step % self.second_order_every == 0:
            parts["second_order"] = self._second_order_loss(self.global_step // self.second_order_every)
            loss = loss + self.loss_weights["second_order"] * parts["second_order"]
        if self.binding_sets and self.global_step % self.binding_every == 0:
            parts["binding"] = self._binding_loss(self.global_step // self.binding_every)
            loss = loss + self.loss_weights["binding"] * parts["binding"]
        bs = int(batch.n_atoms.numel())
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in parts.items():
            self.log(f"train/mse_{k}", v, batch_size=bs, sync_dist=True)
        return loss

    def subsampled_blocks(self, batch, step: int):
        """``batch`` with the block edges of training step ``step`` (:func:`hedgenet.graphs.subsample_block_edges`,
        a draw fixed by (seed, step, rank))."""
        rank = int(self.trainer.global_rank) if self._trainer is not None else 0
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 64 + rank)
        return subsample_block_edges(batch, self.block_edge_fraction, gen)

    def probes_due(self, step: int) -> list[tuple[str, str, int]]:
        """(loss weight key, kind, probe index) of the force-constant probes of training step ``step``: random
        ones on steps 0, n, 2n, … (n = every_n_steps), interlayer ones on steps m − 1, 2m − 1, …
        (m = interlayer_every_n_steps), so that with n = m = 2 they alternate, one probe per step."""
        due = []
        for key, kind in self.fc_losses.items() if self.fc_targets else ():
            every = self.interlayer_every if kind == "interlayer" else self.fc_every
            if (step + (kind == "interlayer")) % every == 0:
                due.append((key, kind, step // every))
        return due

    def _fc_target(self, k: int):
        """The k-th force-constant target (round robin) on this module's device and dtype."""
        k %= len(self.fc_targets)
        key = (k, str(self.device))
        if key not in self._fc_on_device:
            self._fc_on_device[key] = self.fc_targets[k].to(self.device, self.model.dtype)
        return self._fc_on_device[key]

    def _force_constant_probe(self, probe: int, kind: str):
        """The force-constant probe (:class:`hedgenet.training.force_constants.FiniteDifferenceProbe`) number
        ``probe`` of ``kind``: MSE (eV/Å²)² of the model's Hessian–vector products against the reference's
        (dimensionless for ``relative``) on fresh random patterns fixed by (seed, probe), so a resumed run draws
        the same ones; for ``interlayer``, the squared relative error of one rigid interlayer translation, in
        turn (None for a one-layer target: no interlayer modes)."""
        from hedgenet.training.force_constants import force_constant_probe, interlayer_mode_probe, probe_vectors

        t = self._fc_target(probe)
        if kind == "interlayer":
            if not len(t.layer_translations):
                return None
            return interlayer_mode_probe(t, [probe % len(t.layer_translations)])
        v = probe_vectors(len(t.atoms), self.fc_vectors, self.seed * 1_000_003 + probe, self.model.dtype, self.device)
        return force_constant_probe(t, v, relative=kind == "relative", inversion_pairs=self.fc_inversion_pairs)

    def _coupling_loss(self, probe: int) -> torch.Tensor:
        """The coupling loss (:func:`hedgenet.training.couplings.coupling_loss`) of probe ``probe``: the targets
        and their stored displacements in turn, so a resumed run continues the same sequence."""
        from hedgenet.training.couplings import coupling_loss

        t = self._probe_target("couplings", self.coupling_targets, probe)
        return coupling_loss(self.model, t, (probe // len(self.coupling_targets)) % len(t.displaced))

    def _second_order_loss(self, probe: int) -> torch.Tensor:
        """The second-order loss (:func:`hedgenet.training.couplings.second_order_loss`) of probe ``probe``: the
        targets and their stored ± pairs in turn, so a resumed run continues the same sequence; on the fraction
        ``train.block_edge_fraction`` of the block edges (drawn from (seed, probe)) as the H loss."""
        from hedgenet.graphs import block_edge_sample
        from hedgenet.training.couplings import second_order_loss

        t = self._probe_target("second_order", self.second_order_targets, probe)
        keep = None
        if self.block_edge_fraction < 1.0:  # the block edges of this probe: as many as a training step's, drawn anew
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + probe) * 64 + 63)
            keep = block_edge_sample(t.graph, self.block_edge_fraction, gen)
        return second_order_loss(self.model, t, (probe // len(self.second_order_targets)) % len(t.displacements), keep)

    def _binding_loss(self, probe: int) -> torch.Tensor:
        """The binding loss (:func:`hedgenet.training.binding.binding_loss`) of probe ``probe``: the datasets in turn,
        within one a pair of its rigid-layer cells drawn from (seed, probe), so a resumed run draws the same ones."""
        from hedgenet.training.binding import binding_loss, binding_pair

        bset = self._probe_target("binding", self.binding_sets, probe)
        a, b = binding_pair(len(bset.graphs), self.seed, probe)
        return binding_loss(self.model, bset, a, b)

    def _probe_target(self, name: str, targets: list, probe: int):
        """Target ``probe`` (round robin over ``targets``) on this module's device and dtype, moved once."""
        key = (name, probe % len(targets), str(self.device))
        if key not in self._fc_on_device:
            self._fc_on_device[key] = targets[probe % len(targets)].to(self.device, self.model.dtype)
        return self._fc_on_device[key]

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            if self.ema.shadow.parameters().__next__().device != self.device:
                self.ema.shadow.to(self.device)
            self.ema.update(self.model)

    def _evaluate(self, batch, metrics: ErrorMetrics, prefix: str):
        with torch.enable_grad():
            pred = self._eval_model()(batch)
        loss, _ = total_loss(pred, batch, self.loss_weights, self.hamiltonian_shift_eV)
        metrics.update(pred, batch, self.hamiltonian_shift_eV)
        self.log(f"{prefix}/loss", loss, batch_size=int(batch.n_atoms.numel()), sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx):
        return self._evaluate(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx):
        return self._evaluate(batch, self.test_metrics, "test")

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute("val")
        if self.fc_targets:  # the evaluated (EMA) model's Φv error on a fixed pattern of each force-constant cell
            from hedgenet.training.force_constants import force_constant_errors, probe_vectors

            errs = []
            for k in range(len(self.fc_targets)):  # one pattern: 0.4 s an epoch in the main job, four 1.2 s
                t = self._fc_target(k)
                v = probe_vectors(len(t.atoms), 1, 0, self.model.dtype, self.device)
                with torch.enable_grad():
                    errs.append(force_constant_errors(self._eval_model(), t, v).abs().mean().detach())
            values["train/force_constants_mae"] = torch.stack(errs).mean()
        self.log_dict(values, sync_dist=False)
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute("test"), sync_dist=False)
        self.test_metrics.reset()

    # ----------------------------------------------------------------- checkpoints carry the EMA
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.ema is not None:
            checkpoint["ema_state"] = self.ema.shadow.state_dict()
            checkpoint["ema_num_updates"] = self.ema.num_updates

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a checkpoint written before the dispersion tail's log scale resumes with the same coefficients
        upgrade_state_dict(checkpoint.get("state_dict", {}), prefix="model.dispersion.")
        if self.ema is not None and "ema_state" in checkpoint:
            self.ema.shadow.load_state_dict(upgrade_state_dict(checkpoint["ema_state"]))
            self.ema.num_updates = int(checkpoint.get("ema_num_updates", 0))

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        cfg = dict(self.optimizer_cfg)
        name = cfg.pop("name", "adamw")
        classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        if name not in classes:
            raise ValueError(f"train.optimizer.name={name!r} unknown; valid: {sorted(classes)}")
        opt = classes[name](self.model.parameters(), **cfg)
        sched = dict(self.scheduler_cfg)
        kind = sched.pop("name", "none")
        if kind == "none":
            return opt
        if kind == "plateau":
            monitor = sched.pop("monitor", "val/loss")
            s = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **sched)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": s, "monitor": monitor}}
        if kind == "cosine":  # train.scheduler.name=cosine over the plateau defaults: their keys do not apply
            extra = {k: v for k, v in sched.items() if k not in ("factor", "patience", "monitor")}
            if set(extra) - {"eta_min"}:
                raise ValueError(f"train.scheduler: {sorted(set(extra) - {'eta_min'})} do not apply to the cosine "
                                 "schedule (it takes eta_min, the final learning rate). Fix: remove them")
            s = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.trainer.max_epochs, **extra)
            return {"optimizer": opt, "lr_scheduler": s}
        if kind == "anneal":  # the rate held, then a cosine to eta_min over the last anneal_epochs epochs
            extra = {k: v for k, v in sched.items() if k not in ("factor", "patience", "monitor")}
            n, eta_min = extra.pop("anneal_epochs", None), float(extra.pop("eta_min", 0.0))
            if extra:
                raise ValueError(f"train.scheduler: {sorted(extra)} do not apply to the anneal schedule (it takes "
                                 "anneal_epochs and eta_min). Fix: remove them")
            max_epochs = int(self.trainer.max_epochs)
            if n is None or not 1 <= int(n) <= max_epochs:
                raise ValueError(f"train.scheduler.anneal_epochs={n}: the anneal schedule needs the number of final "
                                 f"epochs over which the rate falls, 1 to train.max_epochs ({max_epochs}). Fix: e.g. "
                                 f"+train.scheduler.anneal_epochs={max(1, max_epochs // 4)}")
            n = int(n)
            start = max_epochs - n
            floors = [eta_min / g["lr"] if g["lr"] > 0 else 0.0 for g in opt.param_groups]
            s = torch.optim.lr_scheduler.LambdaLR(opt, [
                (lambda e, f=f: f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * max(0, e - start) / n))) for f in floors])
            return {"optimizer": opt, "lr_scheduler": s}
        raise ValueError(f"train.scheduler.name={kind!r} unknown; valid: none, plateau, cosine, anneal")
