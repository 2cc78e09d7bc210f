"""Thin Hydra entry points (no physics here)."""


def run_hydra_app(app) -> None:
    """Run a ``@hydra.main`` app (Hydra parses sys.argv, reports errors and sets the exit code)."""
    app()


def exit_with_user_error(prog: str, run, err: BaseException) -> None:
    """Record ``err`` in the run directory and exit with one clear line (no stack dump), status 2."""
    import sys

    run.fail(err)
    print(f"{prog}: error: {type(err).__name__}: {err}", file=sys.stderr)
    raise SystemExit(2) from None


def run_stage(prog: str, cfg, body, report=None, user_errors: tuple = ()):
    """The life cycle every hedgenet CLI shares: start the run (run directory, resolved config, logger),
    ``summary = body(cfg, run_dir)``, log it (summary.json, metrics.csv or W&B), ``report(summary, run)``
    for the console. Errors the user can fix (``ConfigError`` and ``user_errors``) become one line and
    exit status 2; any other error is recorded in error.txt and re-raised; the logger is always finished."""
    from hedgenet.config import ConfigError
    from hedgenet.run_io import finish_run, start_run

    run = start_run(cfg)
    try:
        summary = body(cfg, run.run_dir)
        if summary:
            run.log_summary(summary)
            if report is not None:
                report(summary, run)
        return summary
    except (ConfigError, *user_errors) as err:
        exit_with_user_error(prog, run, err)
    except Exception as err:
        run.fail(err)
        raise
    finally:
        finish_run(run)
