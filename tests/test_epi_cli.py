"""hedgenet-epi end to end: graphene's Dirac-point couplings from xTB, a model run compared against them,
input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli

SMALL = ["material=monolayer_graphene", "epi.supercell=[4,4]", "reference.block_cutoff=4.0", "epi.n_states=2"]


def epi(root: Path, name: str, *overrides: str, check: bool = True):
    return run_cli("hedgenet-epi", root, name, [*SMALL, *overrides], check=check)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("epi_root")


@pytest.fixture(scope="module")
def reference_run(root):
    return epi(root, "xtb")[1]


def test_reference_run_finds_the_e2g_coupling(reference_run):
    s = json.loads((reference_run / "summary.json").read_text())
    top = s["strong_modes"][:2]
    assert len(top) == 2 and all(45 < m["frequency_THz"] < 48 for m in top)  # E2g (G mode)
    assert 50 < top[0]["g_meV"] < 110  # 0.2–0.45 eV per primitive cell / √16
    assert (reference_run / "couplings.png").exists() and (reference_run / "epi.npz").exists()


def test_model_run_compares(root, reference_run):
    from hedgenet.models import HedgeNet
    from hedgenet.models.io import save_model
    from hedgenet.reference import make_reference

    torch.manual_seed(0)
    kwargs = dict(elements=[6], r_intra=3.0, r_inter=3.5, size={"channels": 8, "lmax": 1, "num_layers": 1},
                  task="joint", layout=make_reference("xtb").layout.to_json(), block_cutoff=3.0, num_basis=4,
                  radial_hidden=8, dtype="float64")
    path = save_model(root / "model.pt", "hedgenet", kwargs, HedgeNet(**kwargs))
    _, run = epi(root, "model", "calculator=model", f"model_path={path}", f"compare_with={reference_run}")
    s = json.loads((run / "summary.json").read_text())
    assert np.isfinite(s["g_mae_strong_modes_meV"]) and s["calculator"] == "model"


@pytest.mark.parametrize("overrides,expected", [
    (["epi.method=autograd"], "autograd differentiates a model"),
    (["compare_with=/nonexistent"], "no epi.npz there"),
    (["epi.methd=autograd"], "methd"),
])
def test_bad_inputs(root, overrides, expected):
    proc, _ = epi(root, "bad", *overrides, check=False)
    assert proc.returncode != 0 and expected in proc.stderr + proc.stdout
