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
