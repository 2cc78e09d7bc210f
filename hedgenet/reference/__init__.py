"""Reference electronic-structure solvers behind one interface (see :mod:`hedgenet.reference.base`)."""

from __future__ import annotations

import difflib
import inspect

from hedgenet.orbitals.blocks import BlockSet, CellTooSmallError
from hedgenet.reference.base import (
    Reference,
    ReferenceError,
    ReferenceResult,
    SCFNotConvergedError,
    UnsupportedElementError,
)


def _xtb():
    from hedgenet.reference.xtb import XTBReference

    return XTBReference


def _pyscf():
    from hedgenet.reference.pyscf_dft import PySCFReference

    return PySCFReference


REFERENCES = {"xtb": _xtb, "pyscf_dft": _pyscf}


def make_reference(name: str, **settings) -> Reference:
    """Instantiate a reference by config name (``reference=xtb|pyscf_dft``) with its settings."""
    if name not in REFERENCES:
        hint = difflib.get_close_matches(name, REFERENCES, n=1)
        raise ValueError(
            f"unknown reference {name!r}; valid: {sorted(REFERENCES)}"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    cls = REFERENCES[name]()
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    bad = [k for k in settings if k not in valid]
    if bad:
        hints = {k: difflib.get_close_matches(k, valid, n=1) for k in bad}
        msg = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
        raise ValueError(f"reference {name!r} has no setting {msg}; valid settings: {valid}")
    return cls(**settings)


def reference_settings(cfg) -> dict:
    """Keyword arguments of ``make_reference`` from the ``reference`` config group (all keys but ``name``)."""
    from hedgenet.config import resolved_dict

    return {k: v for k, v in resolved_dict(cfg.reference).items() if k != "name"}


__all__ = [
    "BlockSet",
    "CellTooSmallError",
    "REFERENCES",
    "Reference",
    "ReferenceError",
    "ReferenceResult",
    "SCFNotConvergedError",
    "UnsupportedElementError",
    "make_reference",
    "reference_settings",
]
