"""docs/tutorial.md runs as written: its Python blocks, in order, with a small untrained model in place of the
trained one (the shell block is the CLI, tested elsewhere)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cli_runner import untrained_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "tutorial.md"


def test_tutorial_python_blocks_run(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 4
    model = untrained_model(tmp_path / "model.pt")
    code = "\n".join(blocks).replace('"outputs/train/runs/<time>/model.pt"', repr(str(model)))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace: dict = {}
        exec(compile(code, str(DOC), "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert (tmp_path / "phonopy_params.yaml").exists()
    assert namespace["exact"].H.shape[1:] == namespace["first_order"].H.shape[1:]
    assert namespace["b"].n_occupied == 4 * 64 // 2
