"""Heterogeneous atom graphs for HedgeNet: relation functions, neighbour lists, block edges, batching.

:mod:`hedgenet.graphs.pyg` (imported on its own: it needs torch-geometric) converts graphs to and from PyG
``HeteroData`` and batches them with PyG."""

from hedgenet.graphs.neighbors import (
    Graph,
    GraphBuilder,
    as_graph,
    block_edge_sample,
    collate,
    DISPERSION,
    edge_vectors,
    keep_block_edges,
    neighbor_pairs,
    relation_edges,
    reverse_edge_index,
    subsample_block_edges,
)
from hedgenet.graphs.relations import RELATIONS, RelationSpec, make_relations

__all__ = [
    "DISPERSION",
    "RELATIONS",
    "Graph",
    "GraphBuilder",
    "RelationSpec",
    "as_graph",
    "block_edge_sample",
    "collate",
    "edge_vectors",
    "keep_block_edges",
    "make_relations",
    "neighbor_pairs",
    "relation_edges",
    "reverse_edge_index",
    "subsample_block_edges",
]
