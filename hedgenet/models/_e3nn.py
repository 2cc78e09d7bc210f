"""The one place hedgenet imports e3nn (0.4.4, the version mace-torch pins).

e3nn 0.4.4 loads its Wigner constants with ``torch.load`` at import time; torch >= 2.6 defaults to
``weights_only=True`` and refuses the pickled ``slice`` objects in that file. Allow-listing ``slice``
fixes it without the process-wide ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` that ``import mace`` sets.
Import e3nn in hedgenet only as ``from hedgenet.models._e3nn import o3, nn``.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

if hasattr(torch.serialization, "add_safe_globals"):
    torch.serialization.add_safe_globals([slice])

import e3nn  # noqa: E402
from e3nn import nn, o3  # noqa: E402

# e3nn's code generation trips a harmless TorchScript annotation warning on torch >= 2.x
warnings.filterwarnings("ignore", message="The TorchScript type system doesn't support instance-level")


@contextlib.contextmanager
def e3nn_build_options(jit_script_fx: bool = False):
    """Build e3nn modules without TorchScript-compiling their generated code (2-3x faster model
    construction, same speed on CPU); restores e3nn's global defaults afterwards (MACE keeps its own)."""
    old = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=jit_script_fx)
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(**old)


__all__ = ["e3nn_build_options", "nn", "o3"]
