"""The dependency declaration: ranges instead of exact pins, optional parts in extras (launchers, mace, test-only
spglib), and hedgenet working without the mace extra (a clear error for model=mace naming the extra)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_runner import BIN, program_env

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(requirements) -> dict[str, str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower(): r for r in requirements}


def test_core_dependencies_are_ranges_and_optional_parts_are_extras():
    core, extras = _names(PROJECT["dependencies"]), PROJECT["optional-dependencies"]
    for name in ("ase", "h5py", "rich", "matplotlib", "omegaconf", "hydra-core"):
        assert "==" not in core[name] and "<" in core[name], core[name]
    for name in ("hydra-submitit-launcher", "hydra-joblib-launcher", "spglib", "mace-torch", "e3nn"):
        assert name not in core, f"{name} is a core dependency"
    assert set(_names(extras["launchers"])) == {"hydra-submitit-launcher", "hydra-joblib-launcher"}
    assert "spglib" in _names(extras["test"]) and set(_names(extras["mace"])) == {"mace-torch"}
    assert "==" not in _names(extras["ml"])["e3nn"]  # mace-torch's exact pin comes only with the mace extra
    everything = re.search(r"\[(.*)\]", extras["all"][0]).group(1).split(",")
    assert set(everything) == set(extras) - {"all"}


def test_spglib_is_not_imported_by_the_package():
    """spglib is a test dependency (phonopy, a core dependency, brings it for phonopy's own use)."""
    for path in (ROOT / "hedgenet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "spglib" for n in names), path


def test_launcher_configs_compose_and_a_missing_launcher_names_the_extra(tmp_path):
    from hydra import compose, initialize_config_dir

    from hedgenet.cli import missing_launcher_message
    from hedgenet.config import config_dir

    with initialize_config_dir(config_dir(), version_base="1.3"):
        for launcher, target in (("submitit_slurm", "SlurmLauncher"), ("submitit_local", "LocalLauncher"),
                                 ("joblib", "JoblibLauncher")):
            cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
    proc = subprocess.run([str(BIN / "hedgenet-train"), "hydra/launcher=slurm"], cwd=tmp_path,
                          env=program_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "pip install 'hedgenet[launchers]'" in proc.stderr, proc.stderr[-2000:]
    assert "(installed: basic, joblib, submitit_local, submitit_slurm)" in proc.stderr
    # the same message when the plugin is not installed at all (Hydra then lists only the basic launcher)
    hydra_says = "In 'hydra/config': Could not find 'hydra/launcher/submitit_slurm'\n\n" \
                 "Available options in 'hydra/launcher':\n\tbasic\nConfig search path:\n\tprovider=hydra"
    assert "(installed: basic)" in missing_launcher_message(hydra_says)


@pytest.fixture(scope="module")
def without_mace(tmp_path_factory) -> Path:
    """A directory that, first on PYTHONPATH, makes ``import mace`` fail as if mace-torch were not installed."""
    shadow = tmp_path_factory.mktemp("no_mace")
    (shadow / "mace").mkdir()
    (shadow / "mace" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mace'\", name='mace')\n")
    return shadow


def test_hedgenet_imports_without_mace(without_mace):
    """Every module of the package imports without mace-torch: mace is imported only when model=mace is built."""
    code = ("import importlib, pkgutil, sys, hedgenet\n"
            "mods = [m.name for m in pkgutil.walk_packages(hedgenet.__path__, 'hedgenet.')]\n"
            "[importlib.import_module(m) for m in mods]\n"
            "assert 'mace.modules' not in sys.modules\n"
            "print(len(mods))\n")
    env = {**program_env(without_mace), "PYTHONPATH": str(without_mace)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) > 50


def test_model_mace_without_mace_names_the_extra(without_mace, tiny_root, tmp_path):
    root = tiny_root(tmp_path / "root")
    env = {**program_env(root), "PYTHONPATH": str(without_mace)}
    cmd = [str(BIN / "hedgenet-train"), f"data.paths=[{root}/data/tiny.h5]", "model=mace", "task=forces",
           "relations.r_intra=3.0", "relations.r_inter=3.5", f"hydra.run.dir={root}/runs/mace"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "model=mace needs mace-torch" in proc.stderr and "pip install 'hedgenet[mace]'" in proc.stderr
    assert "Traceback" not in proc.stderr
