"""Thin Hydra entry points (no physics here)."""


def run_hydra_app(app) -> None:
    """Run a ``@hydra.main`` app (Hydra parses sys.argv, reports errors and sets the exit code).

    A misspelt key given on the command line without ``+`` (``train.max_epoch=3``) fails in Hydra's
    composition, whose message suggests adding the misspelt key with ``+``. It is reported instead as the
    schemas report a misspelt key in a YAML file: the key, a close match and the valid keys, exit status 2."""
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func):
        return original(lambda: _hint_misspelt_override(func))

    hydra_utils.run_and_report = run_and_report
    try:
        app()
    finally:
        hydra_utils.run_and_report = original


def _hint_misspelt_override(func):
    import sys
    from pathlib import Path

    from hydra.errors import ConfigCompositionException
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    try:
        return func()
    except OSError as err:  # Hydra creating the run directory on a read-only or full disk
        from hedgenet.run_io import file_error_message

        message = file_error_message(err)
        if message is None:
            raise
        print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigCompositionException as err:
        cause = err.__cause__
        if not (str(err).startswith("Could not override") and isinstance(cause, (ConfigKeyError, ConfigAttributeError))):
            raise
        from hedgenet.config import unknown_key_message

        parent = getattr(cause, "parent_node", None)
        valid = list(parent.keys()) if isinstance(parent, DictConfig) else []
        key = str(cause.full_key or cause.key)
        print(f"{Path(sys.argv[0]).name}: error: ConfigError: {unknown_key_message(key, valid)}", file=sys.stderr)
        raise SystemExit(2) from None
