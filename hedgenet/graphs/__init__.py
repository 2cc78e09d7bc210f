"""Heterogeneous atom graphs for HedgeNet: relation functions, neighbour lists, block edges, batching."""

from hedgenet.graphs.neighbors import (
    Graph,
    GraphBuilder,
    collate,
    neighbor_pairs,
    relation_edges,
    reverse_edge_index,
)
from hedgenet.graphs.relations import RELATIONS, RelationSpec, make_relations

__all__ = [
    "RELATIONS",
    "Graph",
    "GraphBuilder",
    "RelationSpec",
    "collate",
    "make_relations",
    "neighbor_pairs",
    "relation_edges",
    "reverse_edge_index",
]
