"""Layered-structure builders (pure ASE/numpy; lengths in Å, angles in degrees).

Every builder returns an ``ase.Atoms`` with pbc=(True, True, True), in-plane lattice vectors in the xy plane,
c = (0, 0, slab thickness + vacuum) with the slab centred in z, and the per-atom layer index in
``atoms.arrays["layer"]`` (int64; 0 = bottom, 1 = top). Hexagonal cells use ASE's 120° convention
a1 = a(1, 0, 0), a2 = a(−1/2, √3/2, 0).

Use :func:`build_structure` to build by name (e.g. from a config)::

    atoms = build_structure("twisted_bilayer_graphene", m=5, n=6)
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

from ase import Atoms

from hedgenet.structures._common import LAYER_KEY
from hedgenet.structures.from_file import structure_from_file
from hedgenet.structures.graphene import bilayer_graphene, monolayer_graphene
from hedgenet.structures.hbn import bilayer_hbn, monolayer_hbn
from hedgenet.structures.supercell import cell_widths, in_plane_width, make_supercell
from hedgenet.structures.tmd import bilayer_mos2, monolayer_mos2
from hedgenet.structures.twisted import (
    COMMENSURATE_TWISTS,
    expected_atom_count,
    twist_angle_deg,
    twisted_bilayer_graphene,
)

__all__ = [
    "BUILDERS",
    "COMMENSURATE_TWISTS",
    "LAYER_KEY",
    "StructureParameterError",
    "bilayer_graphene",
    "bilayer_hbn",
    "bilayer_mos2",
    "build_structure",
    "builder_parameters",
    "cell_widths",
    "expected_atom_count",
    "in_plane_width",
    "make_supercell",
    "monolayer_graphene",
    "monolayer_hbn",
    "monolayer_mos2",
    "structure_from_file",
    "twist_angle_deg",
    "twisted_bilayer_graphene",
]

BUILDERS: dict[str, Callable[..., Atoms]] = {
    "monolayer_graphene": monolayer_graphene,
    "bilayer_graphene": bilayer_graphene,
    "twisted_bilayer_graphene": twisted_bilayer_graphene,
    "bilayer_hbn": bilayer_hbn,
    "bilayer_mos2": bilayer_mos2,
    # monolayers used by relaxation steps (lattice constant, sulfur height) of the bilayer materials
    "monolayer_hbn": monolayer_hbn,
    "monolayer_mos2": monolayer_mos2,
    # your own unit cell from a structure file (material=file material.path=<file>)
    "file": structure_from_file,
}
"""Registry used by :func:`build_structure`: builder name -> builder function."""


class StructureParameterError(TypeError, ValueError):
    """Unknown or missing builder parameter (catchable as either ``TypeError`` or ``ValueError``)."""


def _unknown_builder(builder: object) -> ValueError:
    valid = sorted(BUILDERS)
    close = difflib.get_close_matches(str(builder), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown structure builder {builder!r}; valid builders: {valid}.{hint}")


def builder_parameters(builder: str) -> tuple[str, ...]:
    """Names of the keyword parameters accepted by builder ``builder`` (``ValueError`` if unknown)."""
    if builder not in BUILDERS:
        raise _unknown_builder(builder)
    return tuple(inspect.signature(BUILDERS[builder]).parameters)


def build_structure(builder: str, **params: object) -> Atoms:
    """Build a structure by registry name, passing ``params`` (Å, degrees) to the builder.

    Raises
    ------
    ValueError
        If ``builder`` is not in :data:`BUILDERS` (the message lists the valid names and a close match).
    StructureParameterError
        (a ``TypeError`` and ``ValueError``) if a parameter name is unknown or a required one is missing;
        the message names the offending parameter(s) and lists the valid ones.
    """
    if builder not in BUILDERS:
        raise _unknown_builder(builder)
    func = BUILDERS[builder]
    signature = inspect.signature(func)
    valid_params = list(signature.parameters)
    unknown = [p for p in params if p not in signature.parameters]
    if unknown:
        hints = []
        for p in unknown:
            close = difflib.get_close_matches(p, valid_params, n=1)
            if close:
                hints.append(f"{p!r} -> did you mean {close[0]!r}?")
        hint = (" " + "; ".join(hints)) if hints else ""
        raise StructureParameterError(
            f"{builder}() got unknown parameter(s) {unknown}; valid parameters: {valid_params}.{hint}"
        )
    missing = [
        name
        for name, p in signature.parameters.items()
        if p.default is inspect.Parameter.empty and name not in params
    ]
    if missing:
        raise StructureParameterError(
            f"{builder}() is missing required parameter(s) {missing}; valid parameters: {valid_params}"
        )
    return func(**params)
