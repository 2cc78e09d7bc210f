"""Shared helpers for the benchmark scripts: timing medians and a plain-text table."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int = 3, warmup: int = 0) -> tuple[float, list[float]]:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def print_table(header: list[str], rows: list[list], title: str | None = None) -> str:
    """Print (and return) a markdown table."""
    def fmt(c):
        if isinstance(c, str):
            return c
        if isinstance(c, (int,)) or (hasattr(c, "dtype") and getattr(c.dtype, "kind", "") in "iu"):
            return str(int(c))
        return f"{c:.4g}"

    cells = [[str(c) for c in header]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    text = (f"\n{title}\n\n" if title else "") + "\n".join(lines)
    print(text, flush=True)
    return text


def report(header: list[str], rows: list[list], title: str, results: dict, path) -> None:
    """Print the table and write ``results`` as JSON to ``path`` (its folder made if missing)."""
    import json
    from pathlib import Path

    print_table(header, rows, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def portable_json(obj, root) -> str:
    """``obj`` as indented JSON for a record kept in the repository: the run root's absolute path written as
    ``<root>`` and the repository's own as ``.``, so that no machine's paths are committed."""
    import json
    from pathlib import Path

    text = json.dumps(obj, indent=1) + "\n"
    for path, name in ((Path(root).resolve(), "<root>"), (Path(__file__).resolve().parents[1], ".")):
        text = text.replace(str(path) + "/", name + "/").replace(str(path), name)
    return text


def fit_exponent(n, t) -> float:
    """Exponent p of t ∝ n^p by least squares in log–log."""
    import numpy as np

    return float(np.polyfit(np.log(n), np.log(t), 1)[0])


def reference_cell(n: int, force_constants):
    """The fermi_velocity config, the reference calculator, the unit cell, the phonopy object of
    ``force_constants`` mapped onto the n×n cell and that supercell (ase.Atoms): what the benchmarks that
    compare a model with xTB on thermal displacements of one cell start from."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from hedgenet.calculators import setup_calculation
    from hedgenet.physics.phonons import loaded_force_constants
    from hedgenet.structures.supercell import supercell_atoms

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("fermi_velocity", overrides=["calculator=reference", f"fermi_velocity.supercell=[{n},{n}]"])
    _, ref_calc, unit, _ = setup_calculation(cfg, need_blocks=True, supercell=[n, n])
    phonon, _ = loaded_force_constants(force_constants, unit, [n, n])
    return cfg, ref_calc, unit, phonon, supercell_atoms(phonon, unit)
