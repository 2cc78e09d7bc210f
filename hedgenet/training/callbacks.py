"""Lightning callbacks (module level, so they pickle for ``ddp_spawn``)."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class HistoryWriter(Callback):
    """Rank 0 appends one JSON line of ``callback_metrics`` per validation epoch to ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            row = {k: float(v) for k, v in trainer.callback_metrics.items()}
            row["epoch"] = trainer.current_epoch
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
