"""``hedgenet-sweep``: an Optuna study of ``hedgenet-train`` runs (Optuna ≥ 4, trials composed with Hydra).

    hedgenet-sweep hparams_search=hedgenet                           # 20 trials, sqlite study sweeps/<study>.db
    hedgenet-sweep hparams_search=hedgenet sweep.n_trials=10          # again: resumes the study (10 more)
    hedgenet-sweep hparams_search=mace task=forces 'train.optimizer.lr=tag(log,interval(1e-4,1e-2))'
    hedgenet-sweep hparams_search=hedgenet sweep.storage=journal:sweeps/hedgenet.journal   # start N of these:
                                                                     # N workers sharing one study
    hedgenet-sweep hparams_search=hedgenet sweep.pruner.name=successive_halving
    hedgenet-sweep hparams_search=hedgenet sweep.objectives=[val/forces_mae,val/H_all_mae] \\
        sweep.directions=[minimize,minimize] sweep.pruner.name=none        # multi-objective: a Pareto set
    hedgenet-sweep hparams_search=hedgenet sweep.n_trials=0          # only export the best trial again

Arguments are Hydra overrides of train.yaml, as for hedgenet-train: plain ``key=value`` ones apply to every trial
(and take that key out of the search), ``key=choice(...)``/``interval(...)``/``range(...)`` ones add to the
search space. Trials: ``<sweep.dir>/trial_<n>/`` (hedgenet-train run directories); log: ``<sweep.dir>/sweep.log``;
the best trial: ``$HEDGENET_ROOT/sweeps/tuned/<study>.yaml``, used as ``hedgenet-train tuned=<study>``.
Exit status 2 on a configuration error (before any trial where it can be found then), 128 + signal when stopped.
"""

from __future__ import annotations

import sys


def main(argv=None) -> None:
    import logging

    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    from hedgenet.config import ConfigError, config_dir
    from hedgenet.run_io import file_error_message
    from hedgenet.training.sweep import SweepStopped, run_sweep

    console = logging.StreamHandler(sys.stdout)  # the sweep's own lines (Lightning keeps its own logging)
    console.setFormatter(logging.Formatter("[hedgenet-sweep] %(message)s"))
    sweep_log = logging.getLogger("hedgenet.sweep")
    sweep_log.setLevel(logging.INFO)
    sweep_log.addHandler(console)
    sweep_log.propagate = False
    try:
        summary = run_sweep(argv, config_dir())
    except ConfigError as err:
        print(f"hedgenet-sweep: error: ConfigError: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except SweepStopped as err:
        print(f"hedgenet-sweep: error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_status) from None
    except OSError as err:
        message = file_error_message(err)
        if message is None:
            raise
        print(f"hedgenet-sweep: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    counts = summary["launch"]
    print(f"study {summary['study']} ({summary['storage']}): this launch {counts['COMPLETE']} complete, "
          f"{counts['PRUNED']} pruned, {counts['FAIL']} failed; {summary['n_trials_in_study']} trials in the study; "
          f"trials in {summary['dir']}")


if __name__ == "__main__":
    main()
