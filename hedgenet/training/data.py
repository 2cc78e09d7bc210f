"""Labelled HDF5 datasets as graphs for Lightning: loading, seeded split, batching.

A sample is the dict :meth:`hedgenet.data.store.DatasetStore.read_sample` returns; ``graph_builder``
turns it into one graph (model-specific: relation types and cutoffs), ``collate`` batches graphs.
:func:`load_heterodata` gives the same graphs as PyG ``HeteroData`` for a ``torch_geometric.loader.DataLoader``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from hedgenet.data.store import DatasetError, DatasetStore
from hedgenet.orbitals.layout import OrbitalLayout


def load_samples(paths: Sequence[str | Path]) -> tuple[list[dict], OrbitalLayout, list[dict]]:
    """All finished samples of the given dataset files, their (shared) orbital layout and headers."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    samples, headers, layout = [], [], None
    for p in paths:
        store = DatasetStore(p)
        if not store.exists():
            raise DatasetError(
                f"dataset {p} does not exist. Fix: label it first (hedgenet-label ...) or set data.paths."
            )
        header = store.header()
        this = OrbitalLayout.from_json(header["orbital_layout"])
        if layout is not None and this.shells != layout.shells and any(
            layout.shells.get(z, this.shells[z]) != this.shells[z] for z in this.shells
        ):
            raise DatasetError(f"{p} uses a different orbital basis than the other datasets; cannot mix them")
        layout = this if layout is None else OrbitalLayout({**layout.shells, **this.shells}, layout.basis_name)
        for s in store.iter_samples():
            s["dataset"] = str(p)
            samples.append(s)
        headers.append(header)
    if not samples:
        raise DatasetError(f"no labelled samples in {list(map(str, paths))}")
    return samples, layout, headers


def load_heterodata(paths: Sequence[str | Path], graph_builder: Callable[[dict], object]) -> list:
    """Every finished sample of the dataset files as a PyG ``HeteroData`` (:mod:`hedgenet.graphs.pyg`: node type
    ``atom``, one edge type per relation type of the model, block edges ``("atom", "block", "atom")`` with the H
    and S labels), for users who train PyG models on hedgenet data or batch with PyG::

        from torch_geometric.loader import DataLoader
        data = load_heterodata(["data/ab_bilayer_graphene_default.h5"], model.graph_builder())
        for batch in DataLoader(data, batch_size=8, shuffle=True):
            pred = model(batch)   # a hedgenet model takes a PyG batch as it is

    A batch of these equals :func:`~hedgenet.graphs.collate` of the same graphs field by field (labels made
    uniform over the list as ``collate`` makes them in a batch: a missing virial is NaN). Needs torch-geometric
    (the ``ml`` extra)."""
    from hedgenet.graphs.pyg import to_heterodata_list

    samples, _, _ = load_samples(paths)
    return to_heterodata_list([graph_builder(s) for s in samples])


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded random split into train/val/test index arrays (at least one sample in train and val)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"split fractions val={val_fraction}, test={test_fraction} must be in [0,1) and sum < 1")
    if n < 2:
        raise ValueError(f"need at least 2 samples to train and validate, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    n_val = max(1, int(round(val_fraction * n)))
    n_val = min(n_val, n - n_test - 1)
    return {
        "test": np.sort(perm[:n_test]),
        "val": np.sort(perm[n_test : n_test + n_val]),
        "train": np.sort(perm[n_test + n_val :]),
    }


class EpochSeededSampler(Sampler):
    """Random order that depends only on (seed, epoch): a resumed run sees the same batches as an
    uninterrupted one (Lightning calls ``set_epoch`` every epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class GraphDataModule(L.LightningDataModule):
    """Graphs of labelled samples, split by ``split_seed`` (default: ``seed``), shuffled per epoch by
    ``seed``; batch size is per rank. ``bootstrap_seed``: the training split is replaced by a resample of it
    with replacement (as many samples, drawn with that seed; a committee member's data subset)."""

    def __init__(
        self,
        paths: Sequence[str],
        graph_builder: Callable[[dict], object],
        collate: Callable[[list], object],
        batch_size: int = 2,
        val_fraction: float = 0.2,
        test_fraction: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
        samples: list[dict] | None = None,
        split_seed: int | None = None,
        bootstrap_seed: int | None = None,
    ):
        super().__init__()
        self.paths = list(paths)
        self.graph_builder = graph_builder
        self.collate = collate
        self.batch_size = batch_size
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.split_seed = seed if split_seed is None else split_seed
        self.num_workers = num_workers
        self._samples = samples
        self.bootstrap_seed = bootstrap_seed
        self.graphs: dict[str, list] | None = None
        self.split: dict[str, np.ndarray] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.graphs is not None:
            return
        samples = self._samples
        if samples is None:
            samples, _, _ = load_samples(self.paths)
        self.split = split_indices(len(samples), self.val_fraction, self.test_fraction, self.split_seed)
        if self.bootstrap_seed is not None:  # a committee member's data subset: the training split resampled
            train = self.split["train"]
            self.split["train"] = np.sort(np.random.default_rng(self.bootstrap_seed).choice(train, size=train.size))
        self.sample_keys = [(s.get("dataset", ""), int(s.get("sample_id", k))) for k, s in enumerate(samples)]
        self.graphs = {name: [self.graph_builder(samples[i]) for i in idx] for name, idx in self.split.items()}

    def split_record(self) -> dict[str, list]:
        """Which (dataset, sample id) went where: written into the run directory."""
        return {name: [self.sample_keys[i] for i in idx] for name, idx in self.split.items()}

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        sampler = EpochSeededSampler(len(self.graphs[name]), self.seed) if shuffle else None
        return DataLoader(
            self.graphs[name], batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if len(self.graphs["test"]) else "val", shuffle=False)
