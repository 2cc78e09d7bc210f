"""Models: HedgeNet (heterogeneous-graph E(3)-equivariant network) and its orbital-block heads."""

from hedgenet.models.blocks_head import BlockHead, OrbitalBlockDecoder, RadialBasis
from hedgenet.models.hedgenet import (
    SIZES,
    TASKS,
    HedgeNet,
    count_parameters,
    hidden_irreps,
    model_size,
)

__all__ = [
    "SIZES",
    "TASKS",
    "BlockHead",
    "HedgeNet",
    "OrbitalBlockDecoder",
    "RadialBasis",
    "count_parameters",
    "hidden_irreps",
    "model_size",
]
