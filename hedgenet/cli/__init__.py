"""Thin Hydra entry points (no physics here)."""


def run_hydra_app(app) -> None:
    """Run a ``@hydra.main`` app (Hydra parses sys.argv, reports errors and sets the exit code)."""
    app()
