"""Models: HedgeNet (heterogeneous-graph E(3)-equivariant network), its orbital-block heads, and the
baselines (:mod:`hedgenet.models.baselines`: MACE adapter, DeepH-E3-like Hamiltonian network).

Every family is a :class:`~hedgenet.models.base.GraphModel`; saved models are rebuilt by kind through
:data:`hedgenet.models.io.BUILDERS`.
"""

from hedgenet.models.base import TASKS, GraphModel, count_parameters
from hedgenet.models.blocks_head import BlockHead, OrbitalBlockDecoder, RadialBasis
from hedgenet.models.hedgenet import SIZES, HedgeNet, hidden_irreps, model_size

__all__ = [
    "SIZES",
    "TASKS",
    "BlockHead",
    "GraphModel",
    "HedgeNet",
    "OrbitalBlockDecoder",
    "RadialBasis",
    "count_parameters",
    "hidden_irreps",
    "model_size",
]
