"""One training run (``hedgenet-train``): load the datasets, build the model, fit it with Lightning, evaluate
it on the validation and held-out sets and write metrics.json, plots, checkpoints and model.pt."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from omegaconf import DictConfig

from hedgenet.config import (
    ConfigError,
    check_config,
    resolved_dict,
    unknown_key_message,
)

# Trainer arguments the run sets itself, and where to set them instead
RUN_TRAINER_ARGS = {
    "max_epochs": "train.max_epochs", "gradient_clip_val": "train.gradient_clip_val",
    "log_every_n_steps": "train.log_every_n_steps", "logger": "logger=csv|wandb|none",
    "callbacks": "the callbacks group (callbacks=<option>, +callbacks.<name>={_target_: ...})",
    "default_root_dir": "hydra.run.dir", "inference_mode": None,
}


def check_train_config(cfg: DictConfig) -> DictConfig:
    """The train config against its schema (hedgenet.config_schema.TrainConfig); returns it typed."""
    checked = check_config(cfg, "train")
    for key, where in RUN_TRAINER_ARGS.items():
        if key in cfg.trainer:
            raise ConfigError(f"trainer.{key} is set by hedgenet-train itself"
                              + (f". Fix: set {where} instead" if where else " (forces need autograd in evaluation). "
                                 "Fix: remove it"))
    _instantiable(checked.trainer, "trainer")
    for name, section in (cfg.get("callbacks") or {}).items():
        if section is not None:
            target = _instantiable(section, f"callbacks.{name}")
            if getattr(target, "__name__", "") == "LearningRateMonitor" and cfg.logger.name == "none":
                raise ConfigError(f"callbacks.{name} (LearningRateMonitor) writes the learning rate through the run's "
                                  "logger, and logger=none has none. Fix: logger=csv (csv/metrics.csv) or logger=wandb, "
                                  f"or drop it with ~callbacks.{name}")
    return checked


def _accepted_kwargs(target) -> list[str] | None:
    """Keyword arguments ``target`` accepts, or None when it takes any (``**kwargs``)."""
    import inspect

    params = inspect.signature(target).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _instantiable(section, where: str):
    """The class ``section._target_`` names, after checking the section's keys against its arguments."""
    from hydra.utils import get_object

    if not isinstance(section, DictConfig) or "_target_" not in section:
        raise ConfigError(f"{where} needs a _target_ (the class to build) and its arguments, got {section!r}. "
                          f"Fix: e.g. {where}={{_target_: lightning.pytorch.callbacks.EarlyStopping, monitor: val/loss}}")
    try:
        target = get_object(str(section._target_))
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"{where}._target_={section._target_!r} cannot be imported ({err}). "
                          "Fix: give a class by its full module path") from None
    accepted = _accepted_kwargs(target)
    if accepted is not None:
        for key in section:
            if not str(key).startswith("_") and key not in accepted:
                raise ConfigError(unknown_key_message(f"{where}.{key}", accepted))
    return target


def build_callbacks(cfg: DictConfig) -> list:
    """The Lightning callbacks of the ``callbacks`` group (name → {_target_, arguments}; null drops one),
    whose targets and arguments :func:`check_train_config` checked before anything was loaded."""
    from hydra.utils import instantiate

    return [instantiate(section, _convert_="all") for section in (cfg.get("callbacks") or {}).values()
            if section is not None]


def build_trainer(trainer_cfg: DictConfig, **run_args):
    """``lightning.Trainer`` (or ``trainer._target_``) from the trainer config plus the run's own arguments
    (:data:`RUN_TRAINER_ARGS`, objects such as the logger and callbacks); :func:`check_train_config` checked
    the trainer config's target and keys."""
    from hydra.utils import instantiate

    return instantiate(trainer_cfg, _partial_=True, _convert_="all")(**run_args)



def run_train(cfg: DictConfig, run_dir: Path, callbacks=()) -> dict:
    """One training run (see the module docstring). SIGTERM/SIGINT stop it with :class:`TrainingInterrupted`
    (exit status 128 + signal), naming the checkpoint it resumes from and the command; a non-finite loss stops
    it with :class:`NonFiniteLossError`. Neither writes a model.pt. ``callbacks``: Lightning callbacks added to
    the config's (a sweep's :class:`~hedgenet.training.callbacks.TrialPruning`); the ``run_metrics()`` of those
    that have one go into metrics.json."""
    from hedgenet.training.callbacks import StopOnSignal, TrainingInterrupted

    with StopOnSignal():
        try:
            from hedgenet.training.committee import check_committee_config, train_committee

            if check_committee_config(cfg) is not None:  # K members, each a _run_train in members/<k>/
                check_train_config(cfg)
                metrics = train_committee(cfg, run_dir, list(callbacks), _run_train)
            else:
                metrics = _run_train(cfg, run_dir, list(callbacks))
            StopOnSignal.check()  # a signal whose exception a finaliser swallowed: never a silent success
            return metrics
        except TrainingInterrupted as err:
            raise TrainingInterrupted(err.signum, interrupted_message(cfg, run_dir, err.signum)) from None
        except SystemExit as err:  # Lightning's SIGTERMException (exit status 0): never a silent success
            from lightning.pytorch.utilities.exceptions import SIGTERMException

            if isinstance(err, SIGTERMException):
                import signal

                raise TrainingInterrupted(signal.SIGTERM, interrupted_message(cfg, run_dir, signal.SIGTERM)) from None
            raise


def interrupted_message(cfg: DictConfig, run_dir: Path, signum: int) -> str:
    """What a stopped run says: the signal, the checkpoint it resumes from (the last finished epoch) and
    the command that resumes it in the same run directory (history and logs continue there)."""
    import shlex
    import signal
    import sys

    name = signal.Signals(signum).name
    if (cfg.get("committee") or {}).get("size") is not None:
        return (f"stopped by {name} before the committee was finished; the finished members in {run_dir}/members/ are "
                "kept and the interrupted one continues from its last checkpoint. Rerun the same command with "
                f"hydra.run.dir={run_dir}")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    try:
        from hydra.core.hydra_config import HydraConfig

        task = [o for o in HydraConfig.get().overrides.task
                if not o.startswith(("train.resume=", "hydra.run.dir="))]
    except (ImportError, ValueError):
        task = []
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "hedgenet-train"
    if not prog.startswith("hedgenet-train"):
        prog = "hedgenet-train"
    command = " ".join([prog, *map(shlex.quote, task), "train.resume=last", shlex.quote(f"hydra.run.dir={run_dir}")])
    if ckpt.exists():
        epoch = _checkpoint_epoch(ckpt)
        where = f"epoch {epoch}" if epoch is not None else "the last finished epoch"
        return (f"stopped by {name} before the end of training; no model.pt was written. {ckpt} holds {where}: "
                f"resuming continues after it and keeps history.jsonl and the CSV log whole (each epoch once). "
                f"Resume with:\n  {command}")
    return (f"stopped by {name} before the first epoch finished: there is no checkpoint and no model.pt. "
            f"Rerun the same command to start again:\n  {command.replace(' train.resume=last', '')}")


def _checkpoint_epoch(path: Path):
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["epoch"])
    except Exception:  # noqa: BLE001 — only for the message
        return None


def force_constant_targets(cfg: DictConfig, model) -> list:
    """The reference force constants stored in the training datasets, when the force-constant loss asks for
    them. A weight > 0 with none stored (a dataset labelled without them, or imported) trains without the term
    and says so, with the fix; the run's metrics record how many targets were used."""
    from hedgenet.training.force_constants import load_force_constant_targets
    from hedgenet.training.module import FC_LOSSES

    weights = {k: float(cfg.train.loss_weights.get(k, 0.0)) for k in FC_LOSSES}
    if max(weights.values()) <= 0 or "forces" not in model.outputs:
        return []
    probes = cfg.train.force_constants
    if min(int(probes.every_n_steps), int(probes.n_vectors), int(probes.interlayer_every_n_steps)) < 1:
        raise ConfigError(f"train.force_constants={dict(probes)}: every_n_steps, interlayer_every_n_steps and "
                          "n_vectors must be ≥ 1. Fix: e.g. train.force_constants.every_n_steps=4")
    targets = load_force_constant_targets(list(cfg.data.paths), model)
    if not targets:
        print(f"warning: force-constant loss weights {weights} but none of the "
              f"datasets {list(cfg.data.paths)} stores the reference's force constants: training without the "
              "force-constant loss (phonons are then less accurate, docs/training.md). Fix: label with "
              "dataset.force_constants=true (hedgenet-label adds them to an existing file on its next run), or set "
              "train.loss_weights.force_constants=0 (and force_constants_relative=0, interlayer_modes=0) to silence this", file=sys.stderr)
    return targets


def coupling_targets(cfg: DictConfig, model) -> list:
    """The reference couplings stored in the training datasets (for the final metrics whatever the weight; the
    loss uses them when its weight is > 0). A weight > 0 with none stored is refused with the fix (a silent run
    without the term would be the run it was not)."""
    from hedgenet.training.couplings import load_coupling_targets

    return _block_targets(cfg, model, "couplings", load_coupling_targets, "the reference's couplings",
                          "dataset.couplings=true (it adds them, the samples are kept)")


def second_order_targets(cfg: DictConfig, model) -> list:
    """The reference's even response of ± pairs stored in the training datasets (for the final metrics whatever the
    weight; the loss uses them when its weight is > 0). A weight > 0 with none stored is refused with the fix."""
    from hedgenet.training.couplings import load_second_order_targets

    return _block_targets(cfg, model, "second_order", load_second_order_targets,
                          "the reference's second-order response",
                          "dataset.second_order.n_pairs=4 (it adds it, the samples are kept)")


def binding_targets(cfg: DictConfig, model, samples: list[dict], dm) -> list:
    """The training split's rigid-layer cells per dataset for the binding loss (:mod:`hedgenet.training.binding`)
    when its weight is > 0; refused with the fix when the model predicts no energy, the probe interval is < 1 or no
    dataset has two rigid-layer cells in the training split."""
    from hedgenet.training.binding import binding_sets

    if float(cfg.train.loss_weights.get("binding", 0.0)) <= 0:
        return []
    if "energy" not in model.outputs:
        raise ConfigError(f"train.loss_weights.binding > 0 with task={cfg.task}: the model predicts no energy. Fix: "
                          "task=joint or forces, or train.loss_weights.binding=0")
    if int(cfg.train.force_constants.get("binding_every_n_steps", 1)) < 1:
        raise ConfigError("train.force_constants.binding_every_n_steps must be ≥ 1. Fix: e.g. 2")
    sets = binding_sets(samples, dm.split["train"], dm.graphs["train"])
    if not sets:
        raise ConfigError(f"train.loss_weights.binding > 0 but no dataset of {list(cfg.data.paths)} has two "
                          "rigid-layer cells in the training split. Fix: label rigid shifts (hedgenet-label "
                          "dataset.rigid.shifts_A=[[0,0,0.3],[0,0,0.6],...]), or train.loss_weights.binding=0")
    print(f"binding loss: {sum(len(b.graphs) for b in sets)} rigid-layer cells in {len(sets)} dataset(s)",
          file=sys.stderr)
    return sets


def _block_targets(cfg: DictConfig, model, key: str, load, what: str, label_fix: str) -> list:
    """The targets of the H-block loss ``train.loss_weights.<key>`` that ``load(paths, model)`` finds in the training
    datasets; with a weight > 0: refused when the model predicts no H, the probe interval
    ``train.force_constants.<key>_every_n_steps`` is < 1, or no dataset stores ``what`` (``label_fix``: the
    hedgenet-label setting that adds it)."""
    paths = list(cfg.data.paths)
    if float(cfg.train.loss_weights.get(key, 0.0)) <= 0:
        return load(paths, model) if "H" in model.outputs else []
    if "H" not in model.outputs:
        raise ConfigError(f"train.loss_weights.{key} > 0 with task={cfg.task}: the model predicts no H. Fix: "
                          f"task=joint or hamiltonian, or train.loss_weights.{key}=0")
    if int(cfg.train.force_constants.get(f"{key}_every_n_steps", 1)) < 1:
        raise ConfigError(f"train.force_constants.{key}_every_n_steps must be ≥ 1. Fix: e.g. 2")
    targets = load(paths, model)
    if not targets:
        raise ConfigError(f"train.loss_weights.{key} > 0 but none of the datasets {paths} stores {what}. Fix: rerun "
                          f"hedgenet-label on them with {label_fix}, or train.loss_weights.{key}=0")
    return targets


def _run_train(cfg: DictConfig, run_dir: Path, extra_callbacks: list, bootstrap_seed: int | None = None) -> dict:
    """One model's training in ``run_dir``; ``bootstrap_seed``: train on a resample (with replacement) of the
    training split drawn with that seed (a committee member's data subset)."""
    import lightning as L
    import numpy as np
    import torch

    from hedgenet.graphs import collate
    from hedgenet.models import count_parameters
    from hedgenet.models.io import save_model
    from hedgenet.training.data import GraphDataModule, load_samples
    from hedgenet.training.evaluate import (
        band_errors,
        element_block_errors,
        evaluate,
        learning_curves,
        parity_plots,
        predict_batches,
    )
    from hedgenet.training.factory import build_model
    from hedgenet.training.couplings import coupling_metrics, second_order_metrics
    from hedgenet.training.force_constants import force_constant_metrics
    from hedgenet.training.last_layer import fit_uncertainty
    from hedgenet.training.module import TrainingModule
    from hedgenet.training.tracking import log_run_outputs, single_log_stream, wandb_logger

    single_log_stream()
    checked = check_train_config(cfg)
    if cfg.task not in ("forces", "hamiltonian", "joint"):
        raise ConfigError(f"task={cfg.task!r} unknown; valid: forces, hamiltonian, joint")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    samples, layout, headers = load_samples(list(cfg.data.paths))
    test_paths = list(cfg.data.get("test_paths") or [])
    test_samples, test_headers = [], []
    if test_paths:
        test_samples, _, test_headers = load_samples(test_paths)
    cutoffs = {h["solver_settings"].get("block_cutoff_A") for h in headers + test_headers}
    if len(cutoffs) != 1:
        raise ConfigError(
            f"datasets {list(cfg.data.paths) + test_paths} were labelled with different block cutoffs {cutoffs}. "
            "Fix: label them with one reference.block_cutoff."
        )
    block_cutoff = float(cutoffs.pop())
    elements = sorted({int(z) for s in samples + test_samples for z in s["numbers"]})
    n_layers = int(max(int(np.max(s["layer"])) for s in samples)) + 1
    dtype = torch.float64 if str(cfg.trainer.precision).startswith("64") else torch.float32
    solver_methods = [h["solver_settings"].get("method") for h in headers]
    model, init_kwargs = build_model(cfg, layout, block_cutoff, elements, n_layers, str(dtype).split(".")[1],
                                     solver_methods=solver_methods)
    tail_record = dispersion_tail_record(model, elements, solver_methods)
    if tail_record:
        print(f"dispersion tail: C6 and C8 {tail_record['coefficients']}", file=sys.stderr)

    dm = GraphDataModule(
        cfg.data.paths, model.graph_builder(), collate, batch_size=cfg.data.batch_size,
        val_fraction=cfg.data.val_fraction, test_fraction=cfg.data.test_fraction, seed=cfg.seed,
        split_seed=cfg.data.split_seed, num_workers=cfg.data.num_workers, samples=samples,
        bootstrap_seed=bootstrap_seed,
    )
    dm.setup()
    (run_dir / "split.json").write_text(json.dumps(dm.split_record(), indent=1))
    set_hamiltonian_gauge(model, str(cfg.train.hamiltonian_gauge), dm.graphs["train"])
    stats = model.init_statistics(dm.graphs["train"])
    resume = cfg.train.resume
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume == "auto":  # the run directory's last checkpoint when a killed run left one, else a fresh start
        resume = "last" if last.exists() else None
    if resume == "last":
        resume = str(last)
    if resume is not None and not Path(resume).exists():
        raise ConfigError(f"train.resume={resume} does not exist. Fix: point it at a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt)")
    if resume is not None:
        print(f"resuming from {resume}", file=sys.stderr)
    init_from = cfg.train.get("init_from")
    if init_from is not None and resume is None:
        # fine-tuning: a trained model's weights (its statistics and H gauge included) instead of random ones; a
        # resumed run continues from its own checkpoint instead
        from hedgenet.models.io import ModelFileError, load_weights

        try:
            load_weights(model, cfg.model.name, init_kwargs, init_from)
        except ModelFileError as err:
            raise ConfigError(f"train.init_from: {err}") from None
        stats = {"init_from": str(init_from)}
        print(f"starting from the weights of {init_from}", file=sys.stderr)
    stats["hamiltonian_shift_eV"] = float(model.hamiltonian_shift_eV)
    fc_targets = force_constant_targets(cfg, model)
    c_targets = coupling_targets(cfg, model)
    so_targets = second_order_targets(cfg, model)
    b_sets = binding_targets(cfg, model, samples, dm)
    try:
        module = TrainingModule(
            model, resolved_dict(cfg.train.loss_weights), resolved_dict(cfg.train.optimizer),
            resolved_dict(cfg.train.scheduler), cfg.train.ema_decay,
            force_constant_targets=fc_targets, force_constant_probes=resolved_dict(cfg.train.force_constants),
            seed=int(cfg.seed), coupling_targets=c_targets, block_edge_fraction=float(cfg.train.block_edge_fraction),
            second_order_targets=so_targets, binding_sets=b_sets,
        )
    except ValueError as err:  # a setting out of range (e.g. train.block_edge_fraction): the message names the fix
        raise ConfigError(str(err)) from err

    history = run_dir / "history.jsonl"
    from hedgenet.training.callbacks import (
        AtomicCheckpointIO,
        HistoryWriter,
        KeepLoggedEpochs,
        NonFiniteLossGuard,
        SignalCheck,
        StopOnSignal,
        check_resume_checkpoint,
        read_csv_rows,
    )

    if resume is not None:
        check_resume_checkpoint(resume)
    callbacks = build_callbacks(cfg)

    for cb in callbacks:  # a run resumed into a new directory keeps the earlier epochs of the old one
        if isinstance(cb, HistoryWriter) and resume is not None:
            cb.previous = Path(resume).parent.parent / "history.jsonl"
    callbacks += [NonFiniteLossGuard(), SignalCheck(), *extra_callbacks]

    logger = False
    if cfg.logger.name == "csv":
        from hedgenet.training.callbacks import resumable_csv_logger

        csv_file = run_dir / "csv" / "metrics.csv"
        rows = []
        if resume is not None:  # the rows of the finished epochs (this run directory's, or the resumed run's)
            earlier = Path(resume).parent.parent / "csv" / "metrics.csv"
            rows = read_csv_rows(csv_file if csv_file.exists() else earlier)
        callbacks.append(KeepLoggedEpochs(rows))
        logger = resumable_csv_logger(str(run_dir))
    elif cfg.logger.name == "wandb":
        # opens the W&B run on global rank 0 only, once Lightning knows the rank (hedgenet.training.tracking)
        logger = wandb_logger(cfg, run_dir)
    plugins = {} if "plugins" in cfg.trainer else {"plugins": [AtomicCheckpointIO()]}
    trainer = build_trainer(
        checked.trainer, max_epochs=cfg.train.max_epochs, inference_mode=False, logger=logger, **plugins,
        callbacks=callbacks, gradient_clip_val=cfg.train.gradient_clip_val,
        log_every_n_steps=cfg.train.log_every_n_steps, default_root_dir=str(run_dir),
    )
    t0 = time.perf_counter()
    # with logger=wandb, run_stage puts the summary into the logger's W&B run and finishes it
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    train_time = time.perf_counter() - t0
    if not trainer.is_global_zero:
        return {}
    final = module.ema.shadow if module.ema is not None else module.model
    final = final.cpu().to(dtype)
    metrics, arrays = evaluate(final, dm.graphs["val"], cfg.data.batch_size, "val")
    if "val/loss" in trainer.callback_metrics:  # the weighted loss of the last validation (same weights as final)
        metrics["val/loss"] = float(trainer.callback_metrics["val/loss"])
    else:  # resumed after the last epoch (killed before model.pt was written): nothing was left to validate
        metrics["val/loss"] = validation_loss(final, dm.graphs["val"], module.loss_weights, cfg.data.batch_size)
    metrics.update(inference_time(final, dm.graphs["val"]))
    metrics.update(force_constant_metrics(final, fc_targets))
    metrics.update(coupling_metrics(final, c_targets))
    metrics.update(second_order_metrics(final, so_targets))   # of the stored pairs (trained on when weighted)
    # held-out test: data.test_paths (other datasets) if given, else the test_fraction split
    builder = final.graph_builder()
    test_graphs = [builder(s) for s in test_samples] if test_samples else dm.graphs["test"]
    if test_graphs:
        t_eval = time.perf_counter()
        test_predictions = list(predict_batches(final, test_graphs, batch_size=1))  # one pass serves all three
        test_metrics, arrays = evaluate(final, prefix="test", predictions=test_predictions)
        metrics.update(test_metrics)
        metrics.update(element_block_errors(final, test_predictions, "test"))
        metrics.update(band_errors(final, test_predictions, prefix="test"))
        metrics["test_eval_time_s"] = time.perf_counter() - t_eval
    uncertainty, uncertainty_metrics = fit_uncertainty(cfg.train.uncertainty, final, dm.graphs["train"],
                                                       dm.graphs["val"], test_graphs, run_dir)
    metrics.update(uncertainty_metrics)
    metrics.update(
        train_time_s=train_time, n_parameters=count_parameters(final), n_train=len(dm.graphs["train"]),
        n_val=len(dm.graphs["val"]), n_test=len(test_graphs), n_force_constant_targets=len(fc_targets),
        n_coupling_targets=len(c_targets), n_second_order_targets=len(so_targets),
        epochs=cfg.train.max_epochs, epochs_trained=epochs_trained(trainer, history), init_statistics=stats,
    )
    if tail_record:
        metrics["dispersion_tail"] = {**tail_record, **{k: v.detach().cpu().tolist()
                                                        for k, v in final.dispersion.coefficients().items()}}
    for cb in extra_callbacks:
        metrics.update(cb.run_metrics() if hasattr(cb, "run_metrics") else {})
    StopOnSignal.check()  # before the outputs: a stopped run writes no metrics.json and no model.pt
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    parity_plots(arrays, run_dir)
    learning_curves(history, run_dir)
    save_model(run_dir / "model.pt", cfg.model.name, init_kwargs, final,
               extra={"datasets": [str(p) for p in cfg.data.paths], "metrics": metrics,
                      **({"uncertainty": uncertainty} if uncertainty else {})})
    if cfg.logger.name == "wandb":
        log_run_outputs(logger, run_dir, str(cfg.model.name), metrics, bool(cfg.logger.get("log_model", True)))
    return metrics


def dispersion_tail_record(model, elements, solver_methods) -> dict | None:
    """How the model's dispersion tail treats C6 and C8 for data of ``elements`` labelled by ``solver_methods``
    (held at the reference's own values, or learned and why), for the log and metrics.json; None without a tail."""
    from hedgenet.models.dispersion import held_tail_mismatch

    if getattr(model, "dispersion", None) is None:
        return None
    if not model.dispersion.learnable:
        return {"coefficients": "held at GFN1-xTB's own values for carbon"}
    why = held_tail_mismatch(elements, solver_methods)
    return {"coefficients": "learned (" + (why or "relations.dispersion_learnable=true") + ")"}


def epochs_trained(trainer, history: Path) -> int:
    """Epochs the model has been trained for (resumed ones included): the trainer's count, or, where the
    launching process's trainer was not advanced (``ddp_spawn`` trains in worker processes), one more than
    the last epoch in ``history.jsonl``. Less than ``train.max_epochs`` when early stopping or pruning ended
    the run."""
    from hedgenet.training.callbacks import HistoryWriter

    rows = HistoryWriter.read(history)
    return max(int(trainer.current_epoch), max(rows) + 1 if rows else 0)


def validation_loss(model, graphs, loss_weights: dict, batch_size: int) -> float:
    """The weighted training loss over ``graphs`` (mean over batches weighted by their number of structures, as
    Lightning averages the logged ``val/loss``)."""
    from hedgenet.training.evaluate import predict_batches
    from hedgenet.training.losses import total_loss

    total, n = 0.0, 0
    for pred, batch in predict_batches(model, graphs, batch_size):
        loss, _ = total_loss(pred, batch, dict(loss_weights), float(getattr(model, "hamiltonian_shift_eV", 0.0)))
        size = int(batch.n_atoms.numel())
        total, n = total + float(loss) * size, n + size
    return total / max(n, 1)


HAMILTONIAN_GAUGES = ("fermi", "none")


def set_hamiltonian_gauge(model, gauge: str, graphs) -> None:
    """``train.hamiltonian_gauge``: ``fermi`` sets the model's Hamiltonian shift to the reference's Fermi level of
    the first training cell with H and S (its H head then learns H − E_F·S), ``none`` to 0 (H itself)."""
    from hedgenet.models.base import fermi_level_eV

    if gauge not in HAMILTONIAN_GAUGES:
        raise ConfigError(f"train.hamiltonian_gauge={gauge!r} unknown. Fix: one of {list(HAMILTONIAN_GAUGES)}")
    shift = 0.0
    if gauge == "fermi" and {"H", "S"} <= set(model.outputs):
        labelled = next((g for g in graphs if g.H is not None and g.S is not None), None)
        if labelled is not None:
            shift = fermi_level_eV(labelled, model.layout, model.elements)
    model.hamiltonian_shift_eV.fill_(shift)


def inference_time(model, graphs, n_max: int = 8) -> dict:
    """Wall time (s) of one full prediction (energy, forces by autograd, H/S blocks) per structure, the
    median over up to ``n_max`` of ``graphs`` one at a time after one warm-up call (batching included, the
    neighbour lists of the graphs were built before)."""
    import numpy as np

    from hedgenet.training.evaluate import predict_batches

    graphs = list(graphs)[:n_max]
    next(predict_batches(model, graphs[:1], batch_size=1))  # warm-up (lazy initialisation, caches)
    times, atoms = [], []
    for g in graphs:
        t0 = time.perf_counter()
        _, batch = next(predict_batches(model, [g], batch_size=1))
        times.append(time.perf_counter() - t0)
        atoms.append(int(batch.n_atoms.sum()))
    return {"inference_time_s_per_structure": float(np.median(times)),
            "inference_atoms_per_structure": float(np.mean(atoms))}
