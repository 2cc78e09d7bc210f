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


def reference_settings(cfg) -> dict:
    """Keyword arguments of ``make_reference`` from the ``reference`` config group (all keys but ``name``)."""
    from hedgenet.config import resolved_dict

    return {k: v for k, v in resolved_dict(cfg.reference).items() if k != "name"}


def setup_calculation(cfg, need_blocks: bool = False, supercell=None):
    """Reference, calculator and relaxed unit cell for a physics CLI (``calculator=reference|model``).

    Every input check runs before the first expensive call: the calculator and its fit to the material
    (elements, orbital basis when ``need_blocks``) on the unrelaxed structure, and, with the reference as
    calculator, whether ``supercell`` is wide enough for its block cutoff. Returns
    ``(reference, calculator, unit cell, structure parameters)``; ValueErrors become ConfigErrors."""
    from pathlib import Path

    from hedgenet.calculators import check_calculator_for, make_calculator
    from hedgenet.config import ConfigError, resolved_dict
    from hedgenet.reference import make_reference
    from hedgenet.structures import build_structure
    from hedgenet.structures.relax import relaxed_structure

    reference = make_reference(cfg.reference.name, **reference_settings(cfg))
    try:
        calc = make_calculator(cfg.calculator, reference, cfg.model_path)
        check_calculator_for(calc, build_structure(cfg.material.builder, **resolved_dict(cfg.material.params)),
                             reference.layout, need_blocks=need_blocks)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    unit, params = relaxed_structure(resolved_dict(cfg.material), reference, Path(cfg.paths.cache_dir))
    if cfg.calculator == "reference" and need_blocks and supercell is not None:
        from hedgenet.data.displacements import make_phonopy, supercell_atoms

        try:
            reference.check_cell(supercell_atoms(make_phonopy(unit, list(supercell)), unit))
        except ValueError as err:
            raise ConfigError(str(err)) from err
    return reference, calc, unit, params


def load_run_arrays(run_dir, filename: str, prog: str) -> dict:
    """Arrays of ``filename`` (.npz) in a finished run directory of ``prog``, for ``compare_with``."""
    from pathlib import Path

    import numpy as np

    from hedgenet.config import ConfigError

    f = Path(run_dir) / filename
    if not f.exists():
        raise ConfigError(f"compare_with={run_dir}: no {filename} there. Fix: point it at a {prog} run directory")
    return dict(np.load(f, allow_pickle=False))
