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

    from hydra.errors import ConfigCompositionException, MissingConfigException
    from omegaconf import DictConfig
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    try:
        return func()
    except MissingConfigException as err:
        message = missing_launcher_message(str(err))
        if message is None:
            raise
        print(f"{Path(sys.argv[0]).name}: error: ConfigError: {message}", file=sys.stderr)
        raise SystemExit(2) from None
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


LAUNCHERS_EXTRA = "hedgenet[launchers]"
"""The extra that brings Hydra's submitit (SLURM, local processes) and joblib launcher plugins."""


def missing_launcher_message(hydra_message: str) -> str | None:
    """One line for ``hydra/launcher=<name>`` when no installed plugin provides ``<name>`` (Hydra's "Could not
    find 'hydra/launcher/<name>'"): the launchers that are installed and the extra that brings the others."""
    import re

    found = re.search(r"Could not find 'hydra/launcher/([^']+)'", hydra_message)
    if found is None:
        return None
    listed = hydra_message.split("Available options in 'hydra/launcher':")[-1].split("Config search path")[0]
    options = re.findall(r"^\t(\S+)$", listed, re.M)
    installed = f" (installed: {', '.join(options)})" if options else ""
    return (f"hydra/launcher={found.group(1)} is not an installed Hydra launcher{installed}. The submitit launchers "
            f"(submitit_slurm, submitit_local) and joblib come with the launchers extra. Fix: pip install "
            f"'{LAUNCHERS_EXTRA}' (or '.[launchers]' in a checkout), or choose an installed launcher")
