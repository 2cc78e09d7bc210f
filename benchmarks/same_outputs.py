"""Do two runs of the same commands give the same numbers? For a restructuring that must not change
behaviour: compare every array of two output trees (``*.npz`` of the physics CLIs, the labelled ``*.h5``
datasets, the weights in ``model.pt`` files, numeric entries of ``summary.json``) file by file and print one
row per file with the largest absolute difference.

    python benchmarks/same_outputs.py OLD_ROOT NEW_ROOT [--tol 1e-10]

Exit status 1 when a file is missing on one side or a difference exceeds ``--tol`` (timings, paths and
version strings in summaries are ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SKIP_KEYS = ("time", "_s", "path", "dir", "version", "compare_with", "date", "host")


def _arrays_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _arrays_h5(path: Path) -> dict:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def _arrays_pt(path: Path) -> dict:
    import torch

    data = torch.load(path, map_location="cpu", weights_only=False)
    return {k: v.detach().numpy() for k, v in data["state_dict"].items()}


def _numbers_json(path: Path) -> dict:
    out = {}

    def walk(obj, prefix):
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not any(s in str(k) for s in SKIP_KEYS):
                    walk(v, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}[{i}]")
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            out[prefix] = np.asarray(float(obj))
    walk(json.loads(path.read_text()), "")
    return out


READERS = {".npz": _arrays_npz, ".h5": _arrays_h5, ".pt": _arrays_pt, ".json": _numbers_json}


def max_difference(a: dict, b: dict) -> tuple[float, str]:
    """Largest |a − b| over the shared keys (inf when keys, shapes or non-numeric values differ)."""
    if set(a) != set(b):
        return float("inf"), f"keys differ: {sorted(set(a) ^ set(b))[:3]}"
    worst, where = 0.0, ""
    for k in sorted(a):
        x, y = np.asarray(a[k]), np.asarray(b[k])
        if x.shape != y.shape:
            return float("inf"), f"{k}: shape {x.shape} vs {y.shape}"
        if x.dtype.kind in "biufc" and y.dtype.kind in "biufc":
            d = float(np.nanmax(np.abs(x.astype(complex) - y.astype(complex)))) if x.size else 0.0
            if np.isnan(x).any() != np.isnan(y).any():
                d = float("inf")
        else:
            d = 0.0 if np.array_equal(x, y) else float("inf")
        if d > worst:
            worst, where = d, k
    return worst, where


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--tol", type=float, default=1e-10)
    args = p.parse_args(argv)
    files = sorted({f.relative_to(args.old) for f in args.old.rglob("*") if f.suffix in READERS
                    and (f.suffix != ".json" or f.name == "summary.json") and "checkpoints" not in f.parts})
    bad = 0
    print("| file | arrays | max abs difference | where |\n|---|---|---|---|")
    for rel in files:
        other = args.new / rel
        if not other.exists():
            print(f"| {rel} | | missing in {args.new} | |")
            bad += 1
            continue
        read = READERS[rel.suffix]
        a, b = read(args.old / rel), read(other)
        d, where = max_difference(a, b)
        bad += d > args.tol
        print(f"| {rel} | {len(a)} | {d:.3g} | {where} |")
    print(f"\n{len(files)} files, {bad} differ by more than {args.tol:g}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
