"""A committee of trained models: its file (``committee.json``) and the statistics of its members' predictions.

``hedgenet-train committee.size=K`` trains K members (``members/<k>/model.pt``) and writes ``committee.json`` in
the run directory::

    {"format": 1, "members": ["members/0/model.pt", ...],   # paths relative to the file's folder (or absolute)
     "seeds": [...], "bootstrap": false,
     "calibration": {"forces_scale": s_F, "H_scale": s_H, ...} | null}

The calculators room (:class:`~hedgenet.calculators.committee.CommitteeCalculator`) and the training room (training,
calibration) both read it through :func:`read_committee` and share the statistics below, so the spread the
calculator returns is the one that was calibrated.

Spreads (``ddof=1``: the sample standard deviation over members):
- forces per atom (eV/Å): ``sqrt(Σ_c std_c²)``, the norm of the per-component std, comparable with the norm of the
  force error ``|F_mean − F_ref|``; with positions, its square is pooled over the atom and its neighbours within
  ``FORCE_SPREAD_RADIUS_A`` (a few members' std of one atom is a noisy estimate, and force errors are local:
  graphene's first two neighbour shells raise the held-out Spearman correlation with the error from 0.58 to
  0.67 for three members). Calibrations record the radius they used (``forces_spread_radius_A``; absent: 0,
  the atom alone) and the calculator applies it;
- H (eV) and S per block: ``sqrt(Σ_ab std_ab²)`` over the block's orbital entries (Frobenius norm of the
  per-entry std), comparable with the Frobenius norm of the block's error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COMMITTEE_FILE = "committee.json"
COMMITTEE_FORMAT = 1


class CommitteeFileError(ValueError):
    """A committee file that cannot be used (missing, malformed, or naming a member model that is missing); the
    message names the file and the fix."""


def write_committee(path: str | Path, members: list, extra: dict | None = None) -> Path:
    """Write ``committee.json`` atomically: ``members`` (model paths, stored relative to the file's folder when
    inside it) plus ``extra`` (seeds, bootstrap, calibration...)."""
    path = Path(path)
    rel = []
    for m in members:
        m = Path(m)
        try:
            rel.append(m.resolve().relative_to(path.parent.resolve()).as_posix())
        except ValueError:
            rel.append(str(m.resolve()))
    data = {"format": COMMITTEE_FORMAT, "members": rel, "calibration": None, **(extra or {})}
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return path


def committee_path(path: str | Path) -> Path:
    """The committee file of ``path``: the file itself, or ``<run dir>/committee.json`` for a run directory."""
    path = Path(path)
    return path / COMMITTEE_FILE if path.is_dir() else path


def read_committee(path: str | Path) -> dict:
    """The committee file at ``path`` (or in the run directory ``path``) with ``member_paths`` resolved and
    checked: :class:`CommitteeFileError` naming the fix for a missing file, a malformed one, fewer than two
    members, or a member model that does not exist."""
    path = committee_path(path)
    if not path.is_file():
        raise CommitteeFileError(f"committee file {path} does not exist. Fix: train a committee with "
                                 "hedgenet-train committee.size=4 and point at its run directory or its committee.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CommitteeFileError(f"committee file {path} is not valid JSON ({err}). Fix: rerun the hedgenet-train "
                                 "committee.size=K command in its run directory (finished members are kept)") from None
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, list) or len(members) < 2:
        raise CommitteeFileError(f"committee file {path} lists {members!r} as members; a committee needs at least 2 "
                                 "model files. Fix: hedgenet-train committee.size=K with K ≥ 2")
    resolved = [(path.parent / m) if not Path(m).is_absolute() else Path(m) for m in members]
    missing = [str(p) for p in resolved if not p.is_file()]
    if missing:
        raise CommitteeFileError(
            f"committee file {path} names member models that do not exist: {missing}. Fix: rerun the same "
            "hedgenet-train committee.size=K command with hydra.run.dir set to the committee's run directory "
            "(it trains the missing members and keeps the finished ones), or remove them from the file's members")
    data["member_paths"] = resolved
    data["path"] = path
    return data


def update_calibration(path: str | Path, calibration: dict) -> None:
    """Store ``calibration`` (scales and their measurement) in the committee file."""
    path = committee_path(path)
    data = json.loads(path.read_text())
    data["calibration"] = calibration
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


FORCE_SPREAD_RADIUS_A = 2.6
"""Neighbours within this distance (Å) pool their force variance into an atom's spread (module docstring)."""


def force_statistics(forces, positions=None, cell=None, radius_A: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Members' forces (M, N, 3) eV/Å → mean (N, 3) and spread per atom (N,) eV/Å: the norm of the per-component
    sample std, its square averaged over the atom and its neighbours within ``radius_A`` (Å; needs ``positions``
    (N, 3) Å and the periodic ``cell`` (3, 3) Å) when ``radius_A`` > 0."""
    f = np.asarray(forces, dtype=np.float64)
    var = (f.std(axis=0, ddof=1) ** 2).sum(axis=-1)
    if radius_A > 0:
        var = pooled_over_neighbours(var, positions, cell, radius_A)
    return f.mean(axis=0), np.sqrt(var)


def pooled_over_neighbours(values, positions, cell, radius_A: float) -> np.ndarray:
    """Per-atom ``values`` (N,) averaged over each atom and its neighbours within ``radius_A`` (Å), in the
    periodic ``cell`` (3, 3) Å (a zero cell vector: not periodic along it)."""
    from ase.neighborlist import primitive_neighbor_list

    values = np.asarray(values, dtype=np.float64)
    cell = np.asarray(cell, dtype=float)
    pbc = tuple(bool(x) for x in np.linalg.norm(cell, axis=1) > 0)
    i, j = primitive_neighbor_list("ij", pbc, cell, np.asarray(positions, dtype=float), float(radius_A))
    n = len(values)
    return (values + np.bincount(i, weights=values[j], minlength=n)) / (1 + np.bincount(i, minlength=n))


def block_statistics(blocks, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Members' blocks (M, E, n, n) → mean (E, n, n) and spread per block (E,) in the blocks' unit (Frobenius
    norm of the per-entry sample std over the entries where ``mask`` (E, n, n) is true; all when None)."""
    b = np.asarray(blocks, dtype=np.float64)
    var = b.std(axis=0, ddof=1) ** 2
    if mask is not None:
        var = var * np.asarray(mask, dtype=bool)
    return b.mean(axis=0), np.sqrt(var.sum(axis=(-2, -1)))


def block_mask(n_orb_i, n_orb_j, n_max: int) -> np.ndarray:
    """(E, n_max, n_max) mask of the valid orbital entries of blocks between atoms with ``n_orb_i``, ``n_orb_j``."""
    a = np.arange(n_max)
    return (a[None, :, None] < np.asarray(n_orb_i)[:, None, None]) & (a[None, None, :] < np.asarray(n_orb_j)[:, None, None])
