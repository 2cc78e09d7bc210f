"""HDF5 store of labelled samples: one file per dataset, written atomically and resumably.

Schema (version 1; all lengths Å, energies eV, forces eV/Å; see docs/data_format.md)::

    /                      attrs: schema_version, fingerprint, created, hedgenet_version,
                                  solver_settings (JSON), orbital_layout (JSON), material (JSON),
                                  config (YAML), provenance (JSON), units (JSON)
    /reference/            the undisplaced supercell: positions, cell, numbers, layer, pbc
    /samples/<id:06d>/     positions (N,3) Å, cell (3,3) Å, numbers (N,), layer (N,), pbc (3,),
                           displacement (N,3) Å (from /reference), energy () eV, forces (N,3) eV/Å,
                           edge_index (2,E) i->j, cell_shift (E,3) int, H (E,n_max,n_max) eV,
                           S (E,n_max,n_max), orbital_mask (N,n_max) bool, orbital_energies (n_orb,) eV
                           attrs: sample_id, seed, kind ('rattle'|'thermal'|'rigid'), amplitude_A | temperature_K | shift_A,
                                  time_s, fermi_level_eV, stats (JSON), labelled_at, pid
    /failed/<id:06d>/      attrs: sample_id, seed, kind, reason, labelled_at

Writing. A worker that finishes a sample writes ``<file>.staging/<id>.npz`` (temporary name, then an
atomic ``os.replace``). The main process periodically *consolidates*: it copies the HDF5 file, appends
the staged samples that are not in it yet, fsyncs, and atomically replaces the old file; only then are
the staged files removed. A process killed at any moment therefore leaves either the old or the new HDF5
file plus the staged samples, and a rerun merges them: nothing finished is lost, nothing is duplicated.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

SCHEMA_VERSION = 1
UNITS = {
    "positions": "Å",
    "cell": "Å",
    "displacement": "Å",
    "energy": "eV",
    "forces": "eV/Å",
    "H": "eV",
    "S": "1",
    "orbital_energies": "eV",
}
ARRAY_KEYS = (
    "positions",
    "cell",
    "numbers",
    "layer",
    "pbc",
    "displacement",
    "energy",
    "forces",
    "edge_index",
    "cell_shift",
    "H",
    "S",
    "orbital_mask",
    "orbital_energies",
)
_COMPRESSED = {"H", "S", "edge_index", "cell_shift"}


class DatasetError(RuntimeError):
    """A dataset file cannot be used as asked (corrupt, wrong schema, other settings)."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _sid(sample_id: int) -> str:
    return f"{int(sample_id):06d}"


def _sample_attr(value):
    """A sample attribute as written: scalars as they are, lists (a rigid sample's ``shift_A``) from their JSON."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] == "[":
        return json.loads(value)
    return value


class DatasetStore:
    """A labelled dataset in one HDF5 file plus its staging folder for finished, unconsolidated samples."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.staging = self.path.with_name(self.path.name + ".staging")

    # ------------------------------------------------------------------ opening and checking
    def exists(self) -> bool:
        return self.path.exists()

    def _open(self, mode: str = "r") -> h5py.File:
        try:
            f = h5py.File(self.path, mode)
        except (OSError, ValueError) as err:
            staged = len(self.staged_ids()) if self.staging.exists() else 0
            raise DatasetError(
                f"dataset file {self.path} is not a readable HDF5 file (truncated or corrupt): {err}. "
                f"{staged} finished samples waiting in {self.staging} are untouched. Fix: move the "
                f"file away (e.g. `mv {self.path} {self.path}.corrupt`) and rerun the same command to "
                "rebuild it from the staged samples and relabel the rest, or restore it from a backup."
            ) from err
        try:
            version = int(f.attrs["schema_version"])
        except KeyError:
            f.close()
            raise DatasetError(
                f"{self.path} is an HDF5 file but not a hedgenet dataset (no schema_version attribute). "
                "Fix: point dataset.path at a file written by hedgenet-label."
            ) from None
        if version != SCHEMA_VERSION:
            f.close()
            raise DatasetError(
                f"{self.path} has dataset schema version {version}; this hedgenet reads version "
                f"{SCHEMA_VERSION}. Fix: relabel, or use the hedgenet version that wrote it."
            )
        return f

    def create(self, header: dict, reference_atoms) -> None:
        """Create an empty dataset file atomically with its header (settings, provenance, reference)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["created"] = _now()
            f.attrs["units"] = json.dumps(UNITS)
            for key, value in header.items():
                f.attrs[key] = value if isinstance(value, str) else json.dumps(value)
            g = f.create_group("reference")
            g["positions"] = reference_atoms.positions
            g["cell"] = reference_atoms.cell.array
            g["numbers"] = reference_atoms.numbers
            g["layer"] = reference_atoms.arrays["layer"]
            g["pbc"] = np.asarray(reference_atoms.pbc)
            f.create_group("samples")
            f.create_group("failed")
        _fsync_file(tmp)
        os.replace(tmp, self.path)

    def header(self) -> dict:
        with self._open() as f:
            out = {}
            for k, v in f.attrs.items():
                if isinstance(v, bytes):
                    v = v.decode()
                if isinstance(v, str) and v[:1] in "{[":
                    try:
                        v = json.loads(v)
                    except json.JSONDecodeError:
                        pass
                out[k] = v
            return out

    def check_fingerprint(self, fingerprint: str) -> None:
        found = self.header().get("fingerprint")
        if found != fingerprint:
            raise DatasetError(
                f"{self.path} was labelled with other settings (fingerprint {found}, this run "
                f"{fingerprint}: material, supercell, sampler or reference differ). Resuming would mix "
                "two datasets. Fix: choose another dataset.name, or delete the file to start over."
            )

    # ------------------------------------------------------------------ contents
    def ids(self) -> list[int]:
        """Ids of the samples in the HDF5 file (not counting staged ones)."""
        if not self.exists():
            return []
        with self._open() as f:
            return sorted(int(k) for k in f["samples"].keys())

    def failed_ids(self) -> list[int]:
        if not self.exists():
            return []
        with self._open() as f:
            return sorted(int(k) for k in f["failed"].keys())

    def failures(self) -> dict[int, str]:
        with self._open() as f:
            return {int(k): str(g.attrs["reason"]) for k, g in f["failed"].items()}

    def staged_ids(self) -> list[int]:
        if not self.staging.exists():
            return []
        return sorted(int(p.stem) for p in self.staging.glob("*.npz"))

    def done_ids(self) -> set[int]:
        """Samples finished (labelled or failed), consolidated or still staged."""
        return set(self.ids()) | set(self.failed_ids()) | set(self.staged_ids())

    def __len__(self) -> int:
        return len(self.ids())

    def read_sample(self, sample_id: int) -> dict:
        with self._open() as f:
            try:
                g = f["samples"][_sid(sample_id)]
            except KeyError:
                raise KeyError(f"sample {sample_id} is not in {self.path}") from None
            out = {k: g[k][()] for k in g.keys()}
            out.update({k: _sample_attr(v) for k, v in g.attrs.items()})
            return out

    def read_reference(self) -> dict:
        """The undisplaced supercell (positions, cell Å; numbers, layer, pbc)."""
        with self._open() as f:
            return {k: v[()] for k, v in f["reference"].items()}

    def iter_samples(self):
        with self._open() as f:
            for key in sorted(f["samples"].keys()):
                g = f["samples"][key]
                out = {k: g[k][()] for k in g.keys()}
                out.update({k: _sample_attr(v) for k, v in g.attrs.items()})
                yield out

    # ------------------------------------------------------------------ writing
    def stage(self, sample_id: int, arrays: dict | None, attrs: dict) -> None:
        """Write one finished sample (or failure, ``arrays=None``) to the staging folder atomically."""
        self.staging.mkdir(parents=True, exist_ok=True)
        final = self.staging / f"{_sid(sample_id)}.npz"
        tmp = self.staging / f".{_sid(sample_id)}.{os.getpid()}.tmp.npz"
        payload = {"__attrs__": np.array(json.dumps(attrs))}
        if arrays is not None:
            payload.update({k: np.asarray(v) for k, v in arrays.items()})
        np.savez(tmp, **payload)
        _fsync_file(tmp)
        os.replace(tmp, final)

    def consolidate(self) -> int:
        """Move staged samples into the HDF5 file atomically; returns how many were added."""
        staged = sorted(self.staging.glob("*.npz")) if self.staging.exists() else []
        if not staged:
            return 0
        present = set(self.ids()) | set(self.failed_ids())
        todo = [p for p in staged if int(p.stem) not in present]
        added = 0
        if todo:
            tmp = self.path.with_name(self.path.name + ".tmp")
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "a") as f:
                for p in todo:
                    try:
                        data = dict(np.load(p, allow_pickle=False))
                    except (OSError, ValueError, EOFError) as err:  # unreadable: relabel it
                        print(f"warning: staged sample {p} unreadable ({err}); it will be relabelled")
                        p.unlink()
                        continue
                    attrs = json.loads(str(data.pop("__attrs__")))
                    group = f["failed" if attrs.get("status") == "failed" else "samples"]
                    g = group.create_group(_sid(int(p.stem)))
                    for k, v in data.items():
                        kw = {"compression": "lzf"} if k in _COMPRESSED and v.size > 64 else {}
                        g.create_dataset(k, data=v, **kw)
                    for k, v in attrs.items():
                        g.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
                    added += 1
            _fsync_file(tmp)
            os.replace(tmp, self.path)
        for p in staged:  # everything staged is now in the file
            if p.exists():
                p.unlink()
        return added

    def summary(self) -> dict:
        """Counts and label statistics for printing (energies eV, forces eV/Å, H blocks eV)."""
        n_atoms, energies, fmax, frms, hmax, edges, times, kinds = [], [], [], [], [], [], [], {}
        for s in self.iter_samples():
            n_atoms.append(len(s["numbers"]))
            energies.append(float(s["energy"]) / len(s["numbers"]))
            f = s["forces"]
            fmax.append(float(np.abs(f).max()))
            frms.append(float(np.sqrt((f**2).mean())))
            hmax.append(float(np.abs(s["H"]).max()))
            edges.append(s["edge_index"].shape[1])
            times.append(float(s["time_s"]))
            kind = str(s["kind"])
            kinds[kind] = kinds.get(kind, 0) + 1
        n = len(n_atoms)
        return {
            "file": str(self.path),
            "size_MB": self.path.stat().st_size / 1e6 if self.exists() else 0.0,
            "n_samples": n,
            "n_failed": len(self.failed_ids()),
            "by_kind": kinds,
            "atoms_per_sample": sorted(set(n_atoms)),
            "edges_per_sample": [int(min(edges)), int(max(edges))] if n else [],
            "energy_per_atom_eV": [min(energies), max(energies)] if n else [],
            "force_rms_eV_per_A": float(np.mean(frms)) if n else float("nan"),
            "force_max_eV_per_A": max(fmax) if n else float("nan"),
            "label_time_s_median": float(np.median(times)) if n else float("nan"),
            "label_time_s_total": float(np.sum(times)) if n else 0.0,
        }


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def merge_shards(out_path: str | os.PathLike, shard_paths) -> DatasetStore:
    """Merge shard files (SLURM array jobs) into one dataset; all shards must share one fingerprint."""
    shards = [DatasetStore(p) for p in shard_paths]
    if not shards:
        raise DatasetError("no shard files given to merge")
    prints = {str(s.path): s.header().get("fingerprint") for s in shards}
    if len(set(prints.values())) != 1:
        raise DatasetError(f"shards were labelled with different settings: {prints}")
    out = DatasetStore(out_path)
    if out.exists():
        raise DatasetError(f"{out.path} exists; refusing to overwrite. Fix: choose another output path.")
    tmp = out.path.with_name(out.path.name + ".tmp")
    shutil.copyfile(shards[0].path, tmp)
    with h5py.File(tmp, "a") as f:
        for name in ("samples", "failed"):
            for k in list(f[name].keys()):
                del f[name][k]
        for s in shards:
            with s._open() as src:
                for name in ("samples", "failed"):
                    for k in src[name].keys():
                        if k in f[name]:
                            raise DatasetError(f"sample {k} appears in two shards ({s.path})")
                        src.copy(src[name][k], f[name], name=k)
    _fsync_file(tmp)
    os.replace(tmp, out.path)
    return out
