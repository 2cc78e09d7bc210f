"""The binding loss: energy differences between the rigid-layer cells of one dataset.

A rigid shift (``hedgenet-label``'s ``dataset.rigid``) moves one layer as a whole, so two rigid-layer cells of one
dataset differ only in how the layers bind: their energy difference per atom is a step along the binding curve E(d)
or the sliding line, free of the layers' own energies. The absolute energy loss mixes those in — a model fits the
absolute energies of rattles, thermal samples and rigid cells to ≈ 0.1 meV/atom, and the far binding curve asks for
that between two rigid cells (docs/results_training.md, "The far binding curve").

Per probe: one pair (a, b) of the training split's rigid cells of one dataset, drawn from (seed, probe) so that a
resumed run draws the same ones, and the squared error (eV/atom)² of the model's (E_a − E_b)/N against the
reference's. Both energies are differentiable: a constant energy per atom cancels in the difference and in its
gradient (with the partner detached, the loss would pull the model's absolute energy around pair by pair — measured:
0.38 eV/atom off after one production epoch at weight 10⁵).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class BindingSet:
    """The training split's rigid-layer cells of one dataset: their graphs and reference energies (eV/atom)."""

    dataset: str
    graphs: list
    energy_eV_atom: np.ndarray

    def to(self, device, dtype) -> BindingSet:
        return dataclasses.replace(self, graphs=[g.to(device, dtype) for g in self.graphs])


def binding_sets(samples: list[dict], indices, graphs: list) -> list[BindingSet]:
    """The rigid-layer cells (``kind == "rigid"``) among ``samples[i]`` for ``i`` in ``indices`` (the training split;
    ``graphs`` the split's graphs, in the same order), grouped by dataset; datasets with fewer than two are left out
    (no pair)."""
    groups: dict[str, tuple[list, list]] = {}
    for i, graph in zip(indices, graphs):
        s = samples[int(i)]
        if str(s.get("kind", "")) != "rigid":
            continue
        g, e = groups.setdefault(str(s.get("dataset", "")), ([], []))
        g.append(graph)
        e.append(float(s["energy"]) / len(s["numbers"]))
    return [BindingSet(name, g, np.asarray(e)) for name, (g, e) in groups.items() if len(g) >= 2]


def binding_pair(n: int, seed: int, probe: int) -> tuple[int, int]:
    """Two different cells (a, b) of a set of ``n``, drawn from (``seed``, ``probe``)."""
    a, b = np.random.default_rng(seed * 1_000_003 + probe).choice(n, size=2, replace=False)
    return int(a), int(b)


def energy_per_atom(model, graph) -> torch.Tensor:
    """The model's energy per atom (eV/atom) of one cell's graph (on the model's device): one energy pass on the
    model's :meth:`energy_graph` (no forces, no H or S blocks), differentiable in the model's parameters."""
    from hedgenet.graphs import collate

    batch = collate([model.energy_graph(graph)])
    out = model(batch, training=True, compute_forces=False, compute_virial=False)
    return out["energy"][0] / batch.pos.shape[0]


def binding_loss(model, bset: BindingSet, a: int, b: int) -> torch.Tensor:
    """Squared error (eV/atom)² of the model's (E_a − E_b)/N against the reference's, differentiable in both."""
    diff = energy_per_atom(model, bset.graphs[a]) - energy_per_atom(model, bset.graphs[b])
    target = float(bset.energy_eV_atom[a] - bset.energy_eV_atom[b])
    return (diff - target) ** 2
