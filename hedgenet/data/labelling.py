"""Label displaced supercells with a reference solver, in parallel worker processes, resumably.

Every sample is fully determined by (dataset config, sample id): the displacement list is regenerated
identically on every run, and only samples not yet finished (consolidated, staged or failed) are
computed. A sample whose SCF does not converge is recorded under ``/failed`` with its reason and skipped.
For SLURM, shard the id range over an array job (``dataset.num_shards``/``dataset.shard_index``, one
shard file each) and merge the shard files afterwards (see docs/labelling.md).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import numpy as np
from ase import Atoms

from hedgenet.data.displacements import SampleSpec
from hedgenet.data.store import DatasetStore, nonfinite_labels
from hedgenet.reference.base import ReferenceError
from hedgenet.structures.layers import layer_index

_WORKER_REFERENCE = None


def _init_worker(factory, factory_kwargs, threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    global _WORKER_REFERENCE
    _WORKER_REFERENCE = factory(**factory_kwargs)


def label_one(reference, base: Atoms, spec: SampleSpec, store: DatasetStore) -> str:
    """Label one displaced supercell and stage it; returns 'ok' or 'failed: <reason>'."""
    atoms = spec.structure(base)
    attrs = {**spec.attrs(), "labelled_at": time.time(), "pid": os.getpid()}
    t0 = time.perf_counter()
    try:
        res = reference.compute(atoms, with_blocks=True)
    except ReferenceError as err:  # SCF not converged etc.: record and skip
        store.stage(spec.sample_id, None, {**attrs, "status": "failed", "reason": str(err)})
        return f"failed: {err}"
    dt = time.perf_counter() - t0
    b = res.blocks
    arrays = {
        "positions": atoms.positions,
        "cell": atoms.cell.array,
        "numbers": atoms.numbers,
        "layer": layer_index(atoms),
        "pbc": np.asarray(atoms.pbc),
        "displacement": spec.displacement,
        "energy": np.float64(res.energy_eV),
        "forces": res.forces_eV_per_A,
        "edge_index": b.edge_index,
        "cell_shift": b.cell_shift,
        "H": b.H,
        "S": b.S,
        "orbital_mask": reference.layout.orbital_mask(atoms.numbers),
        "orbital_energies": np.sort(res.orbital_energies_eV),
    }
    if res.virial_eV is not None:
        arrays["virial"] = np.asarray(res.virial_eV, dtype=float)
    bad = nonfinite_labels(arrays)
    if bad:  # an unusable label is a recorded failure, never a stored sample
        reason = f"non-finite labels from the reference ({bad})"
        store.stage(spec.sample_id, None, {**attrs, "status": "failed", "reason": reason})
        return f"failed: {reason}"
    attrs.update(
        status="ok",
        time_s=dt,
        fermi_level_eV=res.fermi_level_eV,
        stats={k: v for k, v in res.stats.items() if k != "time_scf_s"},
    )
    store.stage(spec.sample_id, arrays, attrs)
    return "ok"


def _label_in_worker(base: Atoms, spec: SampleSpec, store_path: str) -> tuple[int, str]:
    return spec.sample_id, label_one(_WORKER_REFERENCE, base, spec, DatasetStore(store_path))


def label_dataset(
    store: DatasetStore,
    base: Atoms,
    specs: list[SampleSpec],
    reference_factory,
    reference_kwargs: dict,
    n_workers: int = 1,
    consolidate_every_s: float = 20.0,
    progress: bool = True,
    reference=None,
) -> dict:
    """Label every spec not finished yet; consolidate staged samples into the HDF5 file as we go. Holds the
    dataset's lock for the whole run (:meth:`DatasetStore.locked`): a second labeller on the same file stops at
    once with :class:`~hedgenet.data.store.DatasetLockedError`."""
    with store.locked():
        return _label_locked(store, base, specs, reference_factory, reference_kwargs, n_workers, consolidate_every_s,
                             progress, reference)


def _label_locked(store, base, specs, reference_factory, reference_kwargs, n_workers, consolidate_every_s, progress,
                  reference) -> dict:
    store.consolidate()  # merge what a killed run left staged
    done = store.done_ids()
    todo = [s for s in specs if s.sample_id not in done]
    counts = {"skipped_done": len(specs) - len(todo), "ok": 0, "failed": 0}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs), initial=counts["skipped_done"], desc="labelling", unit="sample")
    last = time.monotonic()

    def record(status: str) -> None:
        nonlocal last
        counts["ok" if status == "ok" else "failed"] += 1
        if bar is not None:
            bar.update(1)
            if status != "ok":
                bar.write(f"sample skipped: {status}")
        if time.monotonic() - last > consolidate_every_s:
            store.consolidate()
            last = time.monotonic()

    try:
        if n_workers <= 1:
            ref = reference if reference is not None else reference_factory(**reference_kwargs)
            for spec in todo:
                record(label_one(ref, base, spec, store))
        elif todo:
            import multiprocessing as mp

            threads = max(1, (os.cpu_count() or 1) // n_workers)
            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(
                n_workers, mp_context=ctx, initializer=_init_worker,
                initargs=(reference_factory, reference_kwargs, threads),
            ) as pool:
                pending = {pool.submit(_label_in_worker, base, s, str(store.path)) for s in todo}
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        _, status = fut.result()
                        record(status)
    finally:
        if bar is not None:
            bar.close()
        store.consolidate()
    return counts
