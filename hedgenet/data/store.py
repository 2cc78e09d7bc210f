"""HDF5 store of labelled samples: one file per dataset, written atomically and resumably.

Schema (version 1; all lengths Å, energies eV, forces eV/Å; see docs/data_format.md)::

    /                      attrs: schema_version, fingerprint, created, hedgenet_version,
                                  solver_settings (JSON), orbital_layout (JSON), material (JSON),
                                  config (YAML), provenance (JSON), units (JSON)
    /reference/            the undisplaced supercell: positions, cell, numbers, layer, pbc, and optionally
                           force_constants (M,M,3,3) eV/Å² of the reference (phonopy finite displacements,
                           attrs displacement_A): the target of the force-constant loss, of this supercell or,
                           when force_constants_cell/ (positions, cell, numbers, layer, pbc) is there, of that
                           larger undisplaced supercell of the same material
    /samples/<id:06d>/     positions (N,3) Å, cell (3,3) Å, numbers (N,), layer (N,), pbc (3,),
                           displacement (N,3) Å (from /reference), energy () eV, forces (N,3) eV/Å,
                           edge_index (2,E) i->j, cell_shift (E,3) int, H (E,n_max,n_max) eV,
                           S (E,n_max,n_max), orbital_mask (N,n_max) bool, orbital_energies (n_orb,) eV,
                           virial (3,3) eV (W = −∂E/∂ε; where the reference gives it, e.g. xTB)
                           attrs: sample_id, seed, kind ('rattle'|'thermal'|'rigid'), amplitude_A | temperature_K | shift_A,
                                  time_s, fermi_level_eV, stats (JSON), labelled_at, pid
    /failed/<id:06d>/      attrs: sample_id, seed, kind, reason, labelled_at

Writing. One labelling run at a time holds ``<file>.lock`` (an exclusive ``flock`` for the whole run,
released by the operating system when the process ends, however it ends); a second run on the same file
stops at once and names the holder. A worker that finishes a sample writes ``<file>.staging/<id>.npz``
(temporary name, then an atomic ``os.replace``). The main process periodically *consolidates*: it checks
builds the new HDF5 file in memory (the old one plus the staged samples not in it yet, arrays with fletcher32
checksums), checks the free space, writes it to ``<file>.<pid>.tmp`` with plain file I/O (HDF5 itself never
writes to the disk: it crashes the process when the disk fills), fsyncs, reads every new sample back from
the disk and compares it with what was staged, and only then atomically replaces the old file and removes
the staged files. A process killed at
any moment therefore leaves either the old or the new HDF5 file plus the staged samples, and a rerun merges
them: nothing finished is lost, nothing is duplicated. A failed write (full disk, read-only directory)
removes its temporary file and stops with one message; the staged samples stay for the rerun.

Reading checks every sample: a damaged array (checksum or decompression failure) or a non-finite or
absurd label (NaN, inf, |x| > 1e10) is a :class:`DatasetError` naming the sample and how to relabel it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import io
import json
import os
import shutil
import socket
from pathlib import Path

import h5py
import numpy as np

from hedgenet.structures.layers import layer_index

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
    "virial": "eV (W = −∂E/∂ε, strain derivative of the cell; absent where the reference has none)",
    "force_constants": "eV/Å² (of the undisplaced supercell, /reference or /reference/force_constants_cell; absent unless labelled)",
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
    "virial",
)
_COMPRESSED = {"H", "S", "edge_index", "cell_shift"}


FLOAT_LABELS = ("positions", "cell", "displacement", "energy", "forces", "H", "S", "orbital_energies", "virial")
"""Arrays that must be finite and below :data:`LABEL_LIMIT` in absolute value, at write and at load."""
LABEL_LIMIT = 1e10
"""No label of a physical sample comes near this (Å, eV, eV/Å): a larger value is damage, not physics."""
MIN_FREE_MARGIN_BYTES = 2 * 2**20
"""Free space kept beyond what a consolidation needs (HDF5 metadata, the staged files themselves)."""


class DatasetError(RuntimeError):
    """A dataset file cannot be used as asked (corrupt, wrong schema, other settings)."""


class DatasetLockedError(DatasetError):
    """Another process is labelling into the same dataset file."""


def nonfinite_labels(arrays: dict) -> str | None:
    """None when every float label of ``arrays`` is finite and below :data:`LABEL_LIMIT`, else what is wrong
    (``"forces: 2 NaN/inf values"``)."""
    for key in FLOAT_LABELS:
        if key not in arrays:
            continue
        v = np.asarray(arrays[key])
        if not np.issubdtype(v.dtype, np.floating) or v.size == 0:
            continue
        bad = ~np.isfinite(v)
        if bad.any():
            return f"{key}: {int(bad.sum())} NaN/inf values"
        big = np.abs(v) > LABEL_LIMIT
        if big.any():
            return f"{key}: {int(big.sum())} values above {LABEL_LIMIT:.0e} in size (largest {float(np.abs(v).max()):.3g})"
    return None


def _write_error(err: OSError, what: str, where: Path, keep: str) -> DatasetError | None:
    """A DatasetError for the write failures a user fixes (full disk, read-only or forbidden directory)."""
    text = str(err)
    if err.errno == errno.ENOSPC or "No space left" in text or "errno = 28" in text:
        loc = "" if str(where) in what else f" ({where})"
        return DatasetError(f"no space left on the device while {what}{loc}. {keep} Fix: free disk space "
                            "(or set HEDGENET_ROOT on a larger disk) and rerun the same command: it resumes.")
    if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) or "Read-only file system" in text \
            or "Permission denied" in text:
        return DatasetError(f"cannot write {where} while {what}: {err.strerror or text}. {keep} Fix: set "
                            "HEDGENET_ROOT (or dataset.path) to a writable directory, or make this one writable.")
    return None


def check_free_space(directory: Path, need_bytes: int, what: str) -> None:
    """DatasetError before writing when the disk holding ``directory`` has less than ``need_bytes`` +
    :data:`MIN_FREE_MARGIN_BYTES` free."""
    free = shutil.disk_usage(directory).free
    need = int(need_bytes) + MIN_FREE_MARGIN_BYTES
    if free < need:
        raise DatasetError(
            f"only {free / 2**20:.1f} MiB free on the disk of {directory}, {what} needs about {need / 2**20:.1f} MiB. "
            "Nothing was written; finished samples are kept. Fix: free disk space (or set HEDGENET_ROOT on a larger "
            "disk) and rerun the same command: it resumes."
        )


_HELD_LOCKS: dict[str, list] = {}  # lock file -> [fd, depth]: re-entrant within one process


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
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def _tmp(self) -> Path:
        """This process's temporary file beside the dataset (never shared with another process)."""
        return self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")

    def _replace_with(self, data: bytes, what: str, keep: str, verify=None) -> None:
        """Write the HDF5 image ``data`` (built in memory) to this process's temporary file with plain file
        I/O, fsync it, ``verify(tmp)`` (read-back), then atomically replace the dataset file. HDF5 never
        writes to the disk itself: a disk that fills during the write is a clean ``ENOSPC`` error here (HDF5
        crashes the process on one), and the temporary file is removed whatever goes wrong."""
        tmp = self._tmp()
        try:
            check_free_space(self.path.parent, len(data), what)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if verify is not None:
                verify(tmp)
            os.replace(tmp, self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise (_write_error(err, what, self.path, keep) or err) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ one writer at a time
    @contextlib.contextmanager
    def locked(self):
        """Hold the dataset's exclusive lock (``<file>.lock``, ``flock``) for the block: one labelling run
        per dataset. Re-entrant in one process; released when the block ends or the process dies (even by
        SIGKILL). :class:`DatasetLockedError` naming the holder when another process has it."""
        import fcntl

        key = str(self.lock_path.absolute())
        if key in _HELD_LOCKS:
            _HELD_LOCKS[key][1] += 1
            try:
                yield
            finally:
                _HELD_LOCKS[key][1] -= 1
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise (_write_error(err, "taking the dataset's lock", self.lock_path,
                                "Nothing was written.") or err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = ""
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except (OSError, ValueError):
                pass
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            who = (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
                   if isinstance(holder, dict) and holder else "another process")
            raise DatasetLockedError(
                f"dataset {self.path} is being labelled by another process ({who}; lock {self.lock_path}). Two "
                "runs on one dataset would label the same samples twice. Fix: wait for that run to end and rerun "
                "this command (it resumes: finished samples are kept), or label into another file "
                "(dataset.name=<other name>). The lock ends with its process, however it ends: there is no stale "
                "lock to delete."
            ) from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}).encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)
        except OSError:
            pass  # the lock holds without its note
        _HELD_LOCKS[key] = [fd, 1]
        try:
            self._remove_stale_files()
            yield
        finally:
            del _HELD_LOCKS[key]
            os.close(fd)

    def _remove_stale_files(self) -> None:
        """Temporary files of dead runs (only called with the lock held: no live writer owns them)."""
        for p in self.path.parent.glob(self.path.name + ".*tmp"):
            if p != self.lock_path:
                p.unlink(missing_ok=True)
        if self.staging.exists():
            for p in self.staging.glob(".*.tmp.npz"):
                p.unlink(missing_ok=True)

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

    def create(self, header: dict, reference_atoms, force_constants=None) -> None:
        """Create an empty dataset file atomically with its header (settings, provenance, reference) and, if
        given, the reference's force constants ``(values (M,M,3,3) eV/Å², displacement Å, cell)``: of the
        undisplaced supercell when ``cell`` is None, else of ``cell`` (ase Atoms with a ``layer`` array)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise (_write_error(err, "creating the dataset's folder", self.path.parent, "Nothing was written.")
                   or err) from None
        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["created"] = _now()
            f.attrs["units"] = json.dumps(UNITS)
            for key, value in header.items():
                f.attrs[key] = value if isinstance(value, str) else json.dumps(value)
            g = f.create_group("reference")
            g["positions"] = reference_atoms.positions
            g["cell"] = reference_atoms.cell.array
            g["numbers"] = reference_atoms.numbers
            g["layer"] = layer_index(reference_atoms)
            g["pbc"] = np.asarray(reference_atoms.pbc)
            if force_constants is not None:
                _put_force_constants(g, *force_constants)
            f.create_group("samples")
            f.create_group("failed")
        self._replace_with(buf.getvalue(), f"creating {self.path}", "Nothing was written.")

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

    def has_fingerprint(self, accepted: tuple[str, ...]) -> bool:
        """Whether this file was labelled with one of the ``accepted`` fingerprints
        (``hedgenet.data.build.dataset_fingerprints``): the same recipe, material and reference settings."""
        return self.header().get("fingerprint") in accepted

    def check_fingerprint(self, accepted: tuple[str, ...]) -> None:
        """Refuse to resume a file labelled with other settings; ``accepted``: the fingerprints this run takes
        (``hedgenet.data.build.dataset_fingerprints``: this run's first)."""
        if not self.has_fingerprint(accepted):
            found = self.header().get("fingerprint")
            raise DatasetError(
                f"{self.path} was labelled with other settings (fingerprint {found}, this run "
                f"{accepted[0]}: material, supercell, sampler or reference differ). Resuming would mix "
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

    def staged_files(self) -> list[Path]:
        """The finished samples waiting in the staging folder (``<id>.npz``), in id order; a worker's sample still
        being written (``.<id>.<pid>.tmp.npz``, which a glob for ``*.npz`` also finds) is not one of them."""
        if not self.staging.exists():
            return []
        return sorted(p for p in self.staging.glob("*.npz") if p.stem.isdigit())

    def staged_ids(self) -> list[int]:
        return [int(p.stem) for p in self.staged_files()]

    def done_ids(self) -> set[int]:
        """Samples finished (labelled or failed), consolidated or still staged."""
        return set(self.ids()) | set(self.failed_ids()) | set(self.staged_ids())

    def __len__(self) -> int:
        return len(self.ids())

    def _read_group(self, g, key: str) -> dict:
        """One sample's arrays and attributes, checked: damaged storage or a non-finite label is a
        DatasetError naming the sample and the fix."""
        fix = (f"The other samples are intact. Fix: `hedgenet-dataset drop {self.path} --sample {int(key)}`, then "
               "rerun the hedgenet-label command that made the file: it relabels that sample.")
        out = {}
        for k in g.keys():
            try:
                out[k] = g[k][()]
            except (OSError, ValueError, RuntimeError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise DatasetError(f"sample {int(key)} of {self.path} cannot be read: its stored {k} is damaged "
                                   f"({first}). {fix}") from None
        bad = nonfinite_labels(out)
        if bad:
            raise DatasetError(f"sample {int(key)} of {self.path} has unusable labels ({bad}). {fix}")
        out.update({k: _sample_attr(v) for k, v in g.attrs.items()})
        return out

    def read_sample(self, sample_id: int) -> dict:
        with self._open() as f:
            try:
                g = f["samples"][_sid(sample_id)]
            except KeyError:
                raise KeyError(f"sample {sample_id} is not in {self.path}") from None
            return self._read_group(g, _sid(sample_id))

    def read_sample_parts(self, sample_id: int) -> tuple[dict, dict]:
        """One sample as :meth:`stage` takes it: its arrays and its attributes (checked as :meth:`read_sample`)."""
        with self._open() as f:
            try:
                g = f["samples"][_sid(sample_id)]
            except KeyError:
                raise KeyError(f"sample {sample_id} is not in {self.path}") from None
            merged = self._read_group(g, _sid(sample_id))
            names = set(g.attrs.keys())
        return ({k: v for k, v in merged.items() if k not in names},
                {k: v for k, v in merged.items() if k in names})

    def read_reference(self) -> dict:
        """The undisplaced supercell (positions, cell Å; numbers, layer, pbc)."""
        with self._open() as f:
            return {k: v[()] for k, v in f["reference"].items() if k not in FORCE_CONSTANT_KEYS + ("second_order",)}

    def read_force_constants_cell(self) -> dict:
        """The undisplaced supercell the stored force constants belong to (positions, cell Å; numbers, layer,
        pbc): /reference/force_constants_cell, or the labelling supercell itself."""
        with self._open() as f:
            g = f["reference"].get("force_constants_cell")
            if g is not None:
                return {k: v[()] for k, v in g.items()}
        return self.read_reference()

    def force_constants_cell_atoms(self):
        """:meth:`read_force_constants_cell` as ASE ``Atoms`` (with its ``layer`` array): the undisplaced cell of the
        stored force constants and couplings."""
        return sample_atoms(self.read_force_constants_cell())

    def reference_atoms(self):
        """:meth:`read_reference` as ASE ``Atoms`` (with its ``layer`` array): the undisplaced labelling supercell."""
        return sample_atoms(self.read_reference())

    def read_force_constants(self) -> np.ndarray | None:
        """The reference's force constants (N, N, 3, 3) eV/Å² of the undisplaced supercell, or None; the
        finite displacement (Å) they were made with is ``force_constants_displacement_A()``."""
        fix = ("The samples are intact. Fix: train without them (train.loss_weights.force_constants=0), or relabel "
               "into a new file (another dataset.name)")
        with self._open() as f:
            if "force_constants" not in f["reference"]:
                return None
            try:
                fc = f["reference"]["force_constants"][()]
            except (OSError, ValueError, RuntimeError) as err:
                raise DatasetError(f"the force constants stored in {self.path} are damaged ({err}). {fix}") from None
        if not np.isfinite(fc).all():
            raise DatasetError(f"the force constants stored in {self.path} are not finite. {fix}")
        return fc

    def has_force_constants(self) -> bool:
        """Whether the file stores the reference's force constants (without reading them)."""
        return self.force_constants_atoms() is not None

    def force_constants_atoms(self) -> int | None:
        """The number of atoms of the stored force constants' cell (without reading them), or None."""
        with self._open() as f:
            d = f["reference"].get("force_constants")
            return None if d is None else int(d.shape[0])

    def force_constants_displacement_A(self) -> float | None:
        """The ± displacement (Å) of the stored force constants' finite differences, or None without them."""
        with self._open() as f:
            d = f["reference"].get("force_constants")
            return None if d is None else float(d.attrs["displacement_A"])

    def add_force_constants(self, values: np.ndarray, displacement_A: float, cell=None) -> None:
        """Store the reference's force constants (as in ``create``), replacing any stored ones (atomic; the
        samples are kept)."""
        self._rewrite_reference(FORCE_CONSTANT_KEYS, lambda g: _put_force_constants(g, values, displacement_A, cell),
                                "storing force constants")

    def _rewrite_reference(self, keys, write, what: str) -> None:
        """Replace the entries ``keys`` of the file's /reference group with what ``write(group)`` puts there:
        the whole file is rewritten atomically under the lock (the samples are kept; on failure the file is
        unchanged). ``what``: the action, for error messages."""
        with self.locked():
            buf = io.BytesIO(self.path.read_bytes())
            with h5py.File(buf, "a") as f:
                for key in keys:
                    if key in f["reference"]:
                        del f["reference"][key]
                write(f["reference"])
            self._replace_with(buf.getvalue(), f"{what} in {self.path}", "The file is unchanged.")

    def add_couplings(self, atoms: np.ndarray, dH: np.ndarray, dS: np.ndarray, edge_index: np.ndarray,
                      cell_shift: np.ndarray, n_orb: np.ndarray, delta_A: float) -> None:
        """Store the reference's couplings of the force-constant cell (:meth:`read_force_constants_cell`):
        dH/du (eV/Å) and dS/du (1/Å) for the displacements of the atoms ``atoms`` (one per lattice orbit; the
        others follow by translation), arrays (len(atoms), 3, E, n_max, n_max) on the cell's block edges
        ``edge_index`` (2, E), ``cell_shift`` (E, 3), by central differences at ± ``delta_A`` Å; float32,
        replacing any stored ones (atomic; the samples are kept)."""
        atoms = np.asarray(atoms, dtype=np.int64)
        dH, dS = np.asarray(dH, dtype=np.float32), np.asarray(dS, dtype=np.float32)
        if dH.shape != dS.shape or dH.shape[:3] != (len(atoms), 3, np.asarray(cell_shift).shape[0]):
            raise DatasetError(f"couplings of shape {dH.shape} / {dS.shape} do not fit {len(atoms)} displaced atoms and "
                               f"{np.asarray(cell_shift).shape[0]} block edges")
        n_cell = len(self.read_force_constants_cell()["numbers"])  # the cell they belong to

        def write(reference):
            g = _put_blocks(reference.create_group("couplings"), edge_index, cell_shift, n_orb, dH=dH, dS=dS)
            g["atoms"] = atoms
            g.attrs["delta_A"] = float(delta_A)
            g.attrs["n_atoms"] = n_cell

        self._rewrite_reference(("couplings",), write, "storing couplings")

    def read_couplings(self) -> dict | None:
        """The stored couplings (:meth:`add_couplings`: ``atoms``, ``dH``, ``dS``, ``edge_index``, ``cell_shift``,
        ``n_orb``, ``delta_A``, ``n_atoms`` of their cell), or None."""
        out = self._read_reference_group(
            "couplings", "the couplings", ("dH", "dS"),
            damaged_fix="train without them (train.loss_weights.couplings=0), or relabel with dataset.couplings=true",
            nonfinite_fix="relabel with dataset.couplings=true")
        if out is not None:
            out.update(delta_A=float(out["delta_A"]), n_atoms=int(out["n_atoms"]))
        return out

    def _read_reference_group(self, name: str, what: str, blocks, damaged_fix: str, nonfinite_fix: str) -> dict | None:
        """Every array and attribute of the /reference group ``name`` (None without it), refused with the fix when
        it is damaged or its ``blocks`` arrays are not finite (``what``: the group in words, for the errors)."""
        with self._open() as f:
            g = f["reference"].get(name)
            if g is None:
                return None
            try:
                out = {k: v[()] for k, v in g.items()}
            except (OSError, ValueError, RuntimeError) as err:
                raise DatasetError(f"{what} stored in {self.path}: damaged, cannot be read ({err}). The samples are intact. "
                                   f"Fix: {damaged_fix}") from None
            out.update(g.attrs)
        if not all(np.isfinite(out[k]).all() for k in blocks):
            raise DatasetError(f"{what} stored in {self.path}: non-finite values. Fix: {nonfinite_fix}")
        return out

    def couplings_atoms(self) -> int | None:
        """The number of atoms of the stored couplings' cell (without reading them), or None."""
        with self._open() as f:
            g = f["reference"].get("couplings")
            return None if g is None else int(g.attrs["n_atoms"])

    def add_second_order(self, displacements: np.ndarray, dH2: np.ndarray, dS2: np.ndarray, present: np.ndarray,
                         edge_index: np.ndarray, cell_shift: np.ndarray, n_orb: np.ndarray,
                         temperature_K: float) -> None:
        """Store the reference's even (second-order) response of the labelling supercell
        (:meth:`read_reference`) to P thermal displacements ``displacements`` (P, N, 3) Å:
        ``dH2[p] = ½[H(u_p) + H(−u_p)] − H(0)`` (eV) and ``dS2`` likewise, arrays (P, E, n_max, n_max) on the cell's
        block edges ``edge_index`` (2, E), ``cell_shift`` (E, 3); ``present`` (P, E): whether the block exists in
        both displaced cells (a pair near the block cutoff may lose it). Float32, replacing any stored ones
        (atomic; the samples are kept)."""
        u = np.asarray(displacements, dtype=np.float64)
        dH2, dS2 = np.asarray(dH2, dtype=np.float32), np.asarray(dS2, dtype=np.float32)
        n_cell = len(self.read_reference()["numbers"])
        e = np.asarray(cell_shift).shape[0]
        if u.shape[1:] != (n_cell, 3) or dH2.shape != dS2.shape or dH2.shape[:2] != (len(u), e) \
                or np.asarray(present).shape != (len(u), e):
            raise DatasetError(f"second-order response of shape {dH2.shape} / {dS2.shape} for displacements "
                               f"{u.shape} does not fit the {n_cell}-atom labelling cell and {e} block edges")

        def write(reference):
            g = _put_blocks(reference.create_group("second_order"), edge_index, cell_shift, n_orb, dH2=dH2, dS2=dS2)
            g["displacements"], g["present"] = u, np.asarray(present, dtype=bool)
            g.attrs["temperature_K"] = float(temperature_K)

        self._rewrite_reference(("second_order",), write, "storing the second-order response")

    def read_second_order(self) -> dict | None:
        """The stored second-order response (:meth:`add_second_order`: ``displacements``, ``dH2``, ``dS2``,
        ``present``, ``edge_index``, ``cell_shift``, ``n_orb``, ``temperature_K``), or None."""
        out = self._read_reference_group(
            "second_order", "the second-order response", ("dH2", "dS2"),
            damaged_fix="train without it (train.loss_weights.second_order=0), or rerun hedgenet-label on the file "
                        "(it stores it again)",
            nonfinite_fix="rerun hedgenet-label on the file")
        if out is not None:
            out["temperature_K"] = float(out["temperature_K"])
        return out

    def second_order_settings(self) -> tuple[int, float] | None:
        """(pairs, temperature K) of the stored second-order response (without reading it), or None."""
        with self._open() as f:
            g = f["reference"].get("second_order")
            return None if g is None else (int(g["displacements"].shape[0]), float(g.attrs["temperature_K"]))

    def iter_samples(self):
        with self._open() as f:
            for key in sorted(f["samples"].keys()):
                yield self._read_group(f["samples"][key], key)

    def damaged(self) -> dict[int, str]:
        """Samples that cannot be used (damaged storage or unusable labels): id → the message."""
        out = {}
        with self._open() as f:
            for key in sorted(f["samples"].keys()):
                try:
                    self._read_group(f["samples"][key], key)
                except DatasetError as err:
                    out[int(key)] = str(err)
        return out

    def drop(self, sample_ids) -> list[int]:
        """Remove samples (e.g. damaged ones) from the file atomically, under the lock; a rerun of the
        labelling command relabels them. Returns the ids removed."""
        ids = sorted({int(i) for i in sample_ids})
        with self.locked():
            removed = []
            buf = io.BytesIO()
            with self._open() as src, h5py.File(buf, "w") as dst:
                for k, v in src.attrs.items():
                    dst.attrs[k] = v
                for name in src.keys():
                    if name in ("samples", "failed"):
                        dst.create_group(name)
                        for key in src[name].keys():
                            if int(key) in ids:
                                removed.append(int(key))
                            else:
                                src.copy(src[name][key], dst[name], name=key)
                    else:
                        src.copy(src[name], dst, name=name)
            self._replace_with(buf.getvalue(), f"dropping samples from {self.path}", "The file is unchanged.")
            for i in removed:
                (self.staging / f"{_sid(i)}.npz").unlink(missing_ok=True)
        return sorted(set(removed))

    # ------------------------------------------------------------------ writing
    def stage(self, sample_id: int, arrays: dict | None, attrs: dict) -> None:
        """Write one finished sample (or failure, ``arrays=None``) to the staging folder atomically."""
        final = self.staging / f"{_sid(sample_id)}.npz"
        tmp = self.staging / f".{_sid(sample_id)}.{os.getpid()}.tmp.npz"
        payload = {"__attrs__": np.array(json.dumps(attrs))}
        if arrays is not None:
            payload.update({k: np.asarray(v) for k, v in arrays.items()})
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
            check_free_space(self.staging, sum(v.nbytes for v in payload.values()), f"staging sample {sample_id}")
            np.savez(tmp, **payload)
            _fsync_file(tmp)
            os.replace(tmp, final)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise (_write_error(err, f"staging sample {sample_id}", final,
                                "The samples finished before it are kept.") or err) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def consolidate(self) -> int:
        """Move staged samples into the HDF5 file atomically; returns how many were added. The new file is
        written under a per-process temporary name, read back and compared with the staged samples before it
        replaces the old one; a failed write leaves the old file and the staged samples as they were."""
        staged = self.staged_files()
        if not staged:
            return 0
        with self.locked():
            present = set(self.ids()) | set(self.failed_ids())
            todo = [p for p in staged if int(p.stem) not in present]
            added = {}
            if todo:
                keep = (f"The file is unchanged; {len(todo)} finished sample(s) stay in {self.staging} for the "
                        "rerun.")
                buf = io.BytesIO(self.path.read_bytes())  # the new file is built in memory ...
                with h5py.File(buf, "a") as f:
                    for p in todo:
                        entry = self._write_staged(f, p)
                        if entry is not None:
                            added[p] = entry
                # ... written with plain I/O, read back from the disk, then swapped in
                self._replace_with(buf.getvalue(), f"adding samples to {self.path}", keep,
                                   verify=lambda tmp: self._verify(tmp, added, len(present) + len(added)))
            for p in staged:  # everything staged is now in the file
                p.unlink(missing_ok=True)
            return len(added)

    def _write_staged(self, f: h5py.File, p: Path):
        """Append the staged sample ``p`` to the open file ``f``; returns (group name, arrays, attrs), or None
        for an unreadable staged file (deleted: it is relabelled)."""
        try:
            data = dict(np.load(p, allow_pickle=False))
            attrs = json.loads(str(data.pop("__attrs__")))
        except (OSError, ValueError, EOFError, KeyError) as err:  # unreadable: relabel it
            print(f"warning: staged sample {p} unreadable ({err}); it will be relabelled")
            p.unlink(missing_ok=True)
            return None
        failed = attrs.get("status") == "failed"
        bad = None if failed else nonfinite_labels(data)
        if bad:  # never store an unusable label: record the sample as failed, with the reason
            attrs = {k: v for k, v in attrs.items() if k in ("sample_id", "seed", "kind", "labelled_at", "pid")}
            attrs.update(status="failed", reason=f"non-finite labels from the reference ({bad})")
            data, failed = {}, True
        name = "failed" if failed else "samples"
        g = f[name].create_group(_sid(int(p.stem)))
        for k, v in data.items():
            kw = {}
            if v.ndim >= 1 and v.size > 0:
                kw["fletcher32"] = True  # a checksum per chunk: damage is detected on reading
                if k in _COMPRESSED and v.size > 64:
                    kw["compression"] = "lzf"
            g.create_dataset(k, data=v, **kw)
        for k, v in attrs.items():
            g.attrs[k] = v if isinstance(v, (str, int, float)) else json.dumps(v)
        return name, data

    def _verify(self, tmp: Path, added: dict, n_expected: int) -> None:
        """Read ``tmp`` back: every added sample's arrays equal what was staged, checksums hold, and the file
        holds ``n_expected`` samples and failures."""
        try:
            with h5py.File(tmp, "r") as f:
                n = len(f["samples"]) + len(f["failed"])
                for p, (name, data) in added.items():
                    g = f[name][_sid(int(p.stem))]
                    for k, v in data.items():
                        back = g[k][()]
                        if back.shape != v.shape or not np.array_equal(back, v, equal_nan=back.dtype.kind == "f"):
                            raise DatasetError(f"read-back of {tmp} differs from staged sample {p.stem} in {k}")
        except OSError as err:
            if _write_error(err, "", tmp, "") is not None:
                raise
            raise DatasetError(f"the new dataset file {tmp} does not read back ({err}); the old file {self.path} "
                               f"and the staged samples are kept. Fix: check the disk, then rerun.") from None
        if n != n_expected:
            raise DatasetError(f"the new dataset file {tmp} holds {n} samples, expected {n_expected}; the old file "
                               f"{self.path} and the staged samples are kept. Fix: rerun the same command.")

    def summary(self) -> dict:
        """Counts and label statistics for printing (energies eV, forces eV/Å, H blocks eV)."""
        n_atoms, energies, fmax, frms, hmax, edges, times, kinds = [], [], [], [], [], [], [], {}
        for s in self.iter_samples():  # imported datasets may lack energies and forces, or blocks
            n_atoms.append(len(s["numbers"]))
            if "energy" in s:
                energies.append(float(s["energy"]) / len(s["numbers"]))
            if "forces" in s:
                f = s["forces"]
                fmax.append(float(np.abs(f).max()))
                frms.append(float(np.sqrt((f**2).mean())))
            if "H" in s:
                hmax.append(float(np.abs(s["H"]).max()))
                edges.append(s["edge_index"].shape[1])
            times.append(float(s.get("time_s", 0.0)))
            kind = str(s.get("kind", ""))
            kinds[kind] = kinds.get(kind, 0) + 1
        n = len(n_atoms)
        return {
            "file": str(self.path),
            "size_MB": self.path.stat().st_size / 1e6 if self.exists() else 0.0,
            "n_samples": n,
            "n_failed": len(self.failed_ids()),
            "by_kind": kinds,
            "atoms_per_sample": sorted(set(n_atoms)),
            "edges_per_sample": [int(min(edges)), int(max(edges))] if edges else [],
            "energy_per_atom_eV": [min(energies), max(energies)] if energies else [],
            "force_rms_eV_per_A": float(np.mean(frms)) if frms else float("nan"),
            "force_max_eV_per_A": max(fmax) if fmax else float("nan"),
            "label_time_s_median": float(np.median(times)) if n else float("nan"),
            "label_time_s_total": float(np.sum(times)) if n else 0.0,
            "force_constants": self.exists() and self.has_force_constants(),
            "force_constants_atoms": self.force_constants_atoms() if self.exists() else None,  # the target cell's
            "couplings": self.exists() and self.couplings_atoms() is not None,
            "second_order_pairs": (self.second_order_settings() or (0,))[0] if self.exists() else 0,
        }


FORCE_CONSTANT_KEYS = ("force_constants", "force_constants_cell", "couplings")
"""What /reference holds besides the undisplaced supercell: the stored force constants, their own cell and the
couplings dH/du, dS/du of that cell."""


def stored_in(paths, read: str):
    """(path, store, value) for each dataset file of ``paths`` whose ``DatasetStore.<read>()`` (e.g.
    ``read_couplings``) returns something: the files that store a training target."""
    for p in paths:
        store = DatasetStore(p)
        value = getattr(store, read)()
        if value is not None:
            yield p, store, value


def sample_atoms(sample: dict):
    """A stored structure (a sample of :meth:`DatasetStore.read_sample` / ``iter_samples``, the reference cell, the
    force-constant cell) as ``ase.Atoms`` (positions and cell in Å) with its ``layer`` column."""
    from ase import Atoms

    atoms = Atoms(numbers=sample["numbers"], positions=sample["positions"], cell=sample["cell"], pbc=sample["pbc"])
    atoms.arrays["layer"] = np.asarray(sample["layer"], dtype=np.int64)
    return atoms


def _put_force_constants(group, values, displacement_A: float, cell=None) -> None:
    values = np.asarray(values, dtype=np.float64)
    n = group["numbers"].shape[0] if cell is None else len(cell)
    if values.shape != (n, n, 3, 3):
        what = "reference supercell" if cell is None else "force-constant cell"
        raise DatasetError(f"force constants of shape {values.shape} do not fit the {n}-atom {what} "
                           f"(expected {(n, n, 3, 3)}: phonopy's full force constants of that cell)")
    if cell is not None:
        g = group.create_group("force_constants_cell")
        g["positions"] = cell.positions
        g["cell"] = cell.cell.array
        g["numbers"] = cell.numbers
        g["layer"] = layer_index(cell)
        g["pbc"] = np.asarray(cell.pbc)
    d = group.create_dataset("force_constants", data=values, fletcher32=True)
    d.attrs["displacement_A"] = float(displacement_A)


def _put_blocks(group, edge_index, cell_shift, n_orb, **blocks):
    """Write block arrays (``name=array``, checksummed) with the block edges they live on into ``group``."""
    group["edge_index"], group["cell_shift"] = np.asarray(edge_index), np.asarray(cell_shift)
    group["n_orb"] = np.asarray(n_orb)
    for name, values in blocks.items():
        group.create_dataset(name, data=values, fletcher32=True)
    return group


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


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
    tmp = out._tmp()
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
