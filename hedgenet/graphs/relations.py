"""Relation functions: how HedgeNet types the edges of its heterogeneous atom graph.

A relation function maps an ordered atom pair (i, j) to one of a fixed, named set of relation types;
every type has its own cutoff (Å) and, in the model, its own message module. The set of types is fixed
when the model is built (it cannot depend on one structure), so the by-element variant needs the element
list and the by-layer variant the number of layers.

Relation functions (``relations=<name>`` in the config):

* ``intra_inter`` (default): ``intra`` (same layer, cutoff ``r_intra``) and ``inter`` (different layers,
  cutoff ``r_inter``).
* ``by_layer_pair``: one type per unordered layer pair, ``L0-L0``, ``L0-L1``, ``L1-L1``, ...; same-layer
  types use ``r_intra``, cross-layer types ``r_inter``. A refinement of ``intra_inter``.
* ``by_element_pair``: one type per (intra|inter, unordered element pair), e.g. ``intra:C-C``,
  ``inter:Mo-S``; cutoffs as in ``intra_inter``. A refinement of ``intra_inter``.
* ``single``: one type ``all`` with one cutoff (default ``max(r_intra, r_inter)``): the homogeneous-graph
  ablation.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ase.data import chemical_symbols

RELATIONS = ("intra_inter", "by_layer_pair", "by_element_pair", "single")
"""Valid relation-function names."""


@dataclass(frozen=True)
class RelationSpec:
    """A relation function: ``types`` (names, fixed order), ``cutoffs`` (Å, one per type).

    ``classify`` returns the type index of ordered pairs; an edge of type t exists when its length is
    below ``cutoffs[t]``.
    """

    name: str
    types: tuple[str, ...]
    cutoffs: tuple[float, ...]
    elements: tuple[int, ...] = ()
    n_layers: int = 2

    @property
    def max_cutoff(self) -> float:
        return max(self.cutoffs)

    def cutoff_of(self, relation: str) -> float:
        return self.cutoffs[self.types.index(relation)]

    @property
    def crosses_layers(self) -> tuple[bool | None, ...]:
        """Per type: True for pairs across layers, False within one layer, None when a type holds both
        (``single``)."""
        if self.name == "single":
            return (None,) * len(self.types)
        if self.name == "intra_inter":
            return tuple(t == "inter" for t in self.types)
        if self.name == "by_layer_pair":
            return tuple(t.split("-")[0] != t.split("-")[1] for t in self.types)
        return tuple(t.startswith("inter:") for t in self.types)

    def classify(self, numbers_i, numbers_j, layer_i, layer_j) -> np.ndarray:
        """Type index (int64) of every ordered pair given the atomic numbers and layer indices."""
        zi, zj = np.asarray(numbers_i), np.asarray(numbers_j)
        li, lj = np.asarray(layer_i), np.asarray(layer_j)
        same = li == lj
        if self.name == "single":
            return np.zeros(len(zi), dtype=np.int64)
        if self.name == "intra_inter":
            return np.where(same, 0, 1).astype(np.int64)
        if self.name == "by_layer_pair":
            top = max(int(li.max(initial=0)), int(lj.max(initial=0)))
            if top >= self.n_layers or min(int(li.min(initial=0)), int(lj.min(initial=0))) < 0:
                raise ValueError(
                    f"relations=by_layer_pair was built for {self.n_layers} layers (0..{self.n_layers - 1}) "
                    f"but the structure has layer index {top}: the number of layers is taken from the training data. "
                    f"Fix: train on data with at least {top + 1} layers (hedgenet-train data.paths=[...]), or train "
                    "with relations=intra_inter, which takes any number of layers."
                )
            a, b = np.minimum(li, lj), np.maximum(li, lj)
            return unordered_pair_index(a, b, self.n_layers).astype(np.int64)
        if self.name == "by_element_pair":
            index = {z: k for k, z in enumerate(self.elements)}
            try:
                ei = np.array([index[int(z)] for z in zi], dtype=np.int64)
                ej = np.array([index[int(z)] for z in zj], dtype=np.int64)
            except KeyError as err:
                raise ValueError(
                    f"relations=by_element_pair was built for elements "
                    f"{[chemical_symbols[z] for z in self.elements]} but the structure contains "
                    f"{chemical_symbols[int(err.args[0])]}. Fix: add it to the model's elements."
                ) from None
            a, b = np.minimum(ei, ej), np.maximum(ei, ej)
            n = len(self.elements)
            pair = unordered_pair_index(a, b, n)
            n_pairs = n * (n + 1) // 2
            return np.where(same, pair, n_pairs + pair).astype(np.int64)
        raise ValueError(f"unknown relation function {self.name!r}")  # pragma: no cover (checked at build)


def unordered_pair_index(lo, hi, n: int):
    """Index of the unordered pair (lo, hi), lo ≤ hi < n, in the row-major upper triangle (0 … n(n+1)/2 − 1);
    numpy arrays or torch tensors alike."""
    return lo * n - lo * (lo - 1) // 2 + (hi - lo)


def _unknown(name: str) -> ValueError:
    close = difflib.get_close_matches(str(name), RELATIONS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown relation function {name!r}; valid: {list(RELATIONS)}.{hint}")


def make_relations(
    name: str = "intra_inter",
    r_intra: float = 5.0,
    r_inter: float = 6.0,
    elements: Sequence[int] = (),
    n_layers: int = 2,
    cutoff: float | None = None,
) -> RelationSpec:
    """Build the relation function ``name`` with intra-/inter-layer cutoffs ``r_intra``/``r_inter`` (Å).

    ``elements`` (atomic numbers) is needed by ``by_element_pair``, ``n_layers`` by ``by_layer_pair``;
    ``cutoff`` (Å) is the one cutoff of ``single`` (default ``max(r_intra, r_inter)``).
    Unknown names raise ``ValueError`` listing the valid ones.
    """
    if name not in RELATIONS:
        raise _unknown(name)
    r_intra, r_inter = float(r_intra), float(r_inter)
    if r_intra <= 0 or r_inter <= 0:
        raise ValueError(f"cutoffs must be positive (Å), got r_intra={r_intra}, r_inter={r_inter}")
    elements = tuple(sorted(int(z) for z in set(elements)))
    if name == "single":
        c = float(cutoff) if cutoff is not None else max(r_intra, r_inter)
        return RelationSpec(name, ("all",), (c,), elements, n_layers)
    if name == "intra_inter":
        return RelationSpec(name, ("intra", "inter"), (r_intra, r_inter), elements, n_layers)
    if name == "by_layer_pair":
        pairs = [(a, b) for a in range(n_layers) for b in range(a, n_layers)]
        types = tuple(f"L{a}-L{b}" for a, b in pairs)
        cutoffs = tuple(r_intra if a == b else r_inter for a, b in pairs)
        return RelationSpec(name, types, cutoffs, elements, n_layers)
    # by_element_pair
    if not elements:
        raise ValueError("relations=by_element_pair needs the model's element list (elements=[...])")
    sym = [chemical_symbols[z] for z in elements]
    pairs = [(a, b) for a in range(len(sym)) for b in range(a, len(sym))]
    types = tuple(f"intra:{sym[a]}-{sym[b]}" for a, b in pairs) + tuple(
        f"inter:{sym[a]}-{sym[b]}" for a, b in pairs
    )
    cutoffs = (r_intra,) * len(pairs) + (r_inter,) * len(pairs)
    return RelationSpec(name, types, cutoffs, elements, n_layers)
