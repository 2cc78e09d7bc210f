"""The package list in pyproject.toml is complete and a built wheel carries the config tree."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "hedgenet").rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"


@pytest.mark.slow
def test_wheel_contains_configs_and_cli_finds_them(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("hedgenet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    conf = sorted(n for n in names if n.startswith("hedgenet/conf/"))
    expected = {
        "hedgenet/conf/" + str(p.relative_to(ROOT / "conf")) for p in (ROOT / "conf").rglob("*.yaml")
    }
    assert expected <= set(conf), sorted(expected - set(conf))
    # an installed (non-editable) copy resolves config_dir() to its own hedgenet/conf
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    out = subprocess.run(
        [sys.executable, "-c", "from hedgenet.config import config_dir; print(config_dir())"],
        cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": ""}, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == str(target / "hedgenet" / "conf")
