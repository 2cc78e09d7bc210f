"""``hedgenet-dataset``: inspect, merge and convert labelled datasets.

    hedgenet-dataset summary data/ab_bilayer_graphene_default.h5
    hedgenet-dataset check data/x.h5                 # every sample read back: damaged or unusable ones listed
    hedgenet-dataset drop data/x.h5 --sample 3       # remove a damaged sample; rerun hedgenet-label to relabel it
    hedgenet-dataset merge out.h5 data/x.shard0-of-8.h5 data/x.shard1-of-8.h5 ...
    hedgenet-dataset export-deeph data/x.h5 --sample 3 deeph_folder/
    hedgenet-dataset import my_data.h5 frames.extxyz        # your energies and forces (eV, eV/Å) as a dataset
    hedgenet-dataset import my_blocks.h5 deeph/0 deeph/1    # DeepH folders (H, S) as a dataset
    hedgenet-dataset export data/x.h5 all.extxyz            # every sample with energy, forces, layer
    hedgenet-dataset calibrate outputs/train/runs/<committee run> data/held_out.h5   # a committee's spread vs error
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _summary(args) -> None:
    from hedgenet.data.store import DatasetStore

    print(json.dumps(DatasetStore(args.file).summary(), indent=1))


def _check(args) -> None:
    from hedgenet.data.store import DatasetStore

    store = DatasetStore(args.file)
    damaged = store.damaged()
    print(json.dumps({"file": str(store.path), "n_samples": len(store), "damaged": list(damaged)}, indent=1))
    for message in damaged.values():
        print(message, file=sys.stderr)
    if damaged:
        sys.exit(1)


def _drop(args) -> None:
    from hedgenet.data.store import DatasetStore

    removed = DatasetStore(args.file).drop(args.sample)
    print(f"removed samples {removed} from {args.file}; rerun the hedgenet-label command that made it to relabel them")


def _merge(args) -> None:
    from hedgenet.data.store import merge_shards

    out = merge_shards(args.out, args.shards)
    print(json.dumps(out.summary(), indent=1))


def _export(args) -> None:
    from hedgenet.data.deeph_format import export_deeph
    from hedgenet.data.store import DatasetStore, sample_atoms
    from hedgenet.orbitals.blocks import BlockSet
    from hedgenet.orbitals.layout import OrbitalLayout

    store = DatasetStore(args.file)
    layout = OrbitalLayout.from_json(store.header()["orbital_layout"])
    s = store.read_sample(args.sample)
    atoms = sample_atoms(s)
    n_orb = np.array([layout.n_orb(int(z)) for z in s["numbers"]])
    blocks = BlockSet(s["edge_index"], s["cell_shift"], s["H"], s["S"], n_orb)
    folder = export_deeph(args.folder, atoms, blocks, layout, float(s["fermi_level_eV"]), args.orbital_order)
    print(f"wrote DeepH folder {folder} ({blocks.n_edges} blocks, orbital order {args.orbital_order})")


def _import(args) -> None:
    from hedgenet.data.interchange import import_sources

    store = import_sources(args.out, args.sources, basis=args.basis, orbital_order=args.orbital_order)
    print(json.dumps(store.summary(), indent=1))
    print(f"ready for training: hedgenet-train data.paths=[{store.path}]")


def _export_extxyz(args) -> None:
    from hedgenet.data.interchange import export_extxyz

    n = export_extxyz(args.file, args.out)
    print(f"wrote {n} frames to {args.out}")


def _calibrate(args) -> None:
    from hedgenet.training.committee import calibrate_committee
    from hedgenet.training.data import load_samples

    samples = load_samples(list(args.datasets))[0]
    if not args.trust_factor > 0:
        raise SystemExit(f"hedgenet-dataset calibrate: --trust-factor {args.trust_factor} must be > 0 (e.g. 2)")
    result = calibrate_committee(args.committee, samples, args.out, label=", ".join(args.datasets),
                                 store=not args.no_store, trust_factor=args.trust_factor)
    for q in ("forces", "H", "S"):
        if q in result:
            r = result[q]
            scale = "undefined (zero spread)" if r["scale"] is None else f"{r['scale']:.4g}"
            print(f"{q:6s} Spearman(spread, |error|) {r['spearman']}  scale s {scale}  RMS error {r['rms_error']:.4g}  "
                  f"RMS spread {r['rms_spread']:.4g}  ({r['n']} entries)")
    print(f"reliability plot {result['plot']}" + ("" if args.no_store else "; scales stored in the committee file"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="hedgenet-dataset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="print a dataset's summary")
    s.add_argument("file")
    s.set_defaults(func=_summary)
    c = sub.add_parser("check", help="read every sample back; list damaged or unusable ones (exit status 1)")
    c.add_argument("file")
    c.set_defaults(func=_check)
    d = sub.add_parser("drop", help="remove samples from a dataset (a rerun of hedgenet-label relabels them)")
    d.add_argument("file")
    d.add_argument("--sample", type=int, action="append", required=True)
    d.set_defaults(func=_drop)
    m = sub.add_parser("merge", help="merge shard files of one dataset")
    m.add_argument("out")
    m.add_argument("shards", nargs="+")
    m.set_defaults(func=_merge)
    e = sub.add_parser("export-deeph", help="write one sample as a DeepH folder")
    e.add_argument("file")
    e.add_argument("folder")
    e.add_argument("--sample", type=int, default=0)
    e.add_argument("--orbital-order", default="e3nn", choices=["e3nn", "deeph", "standard", "pyscf"])
    e.set_defaults(func=_export)
    i = sub.add_parser("import", help="write extxyz files (energy, forces) and/or DeepH folders (H, S) as a new dataset")
    i.add_argument("out", help="the new dataset file (.h5)")
    i.add_argument("sources", nargs="+", help="extxyz files and/or DeepH folders")
    i.add_argument("--basis", default="xtb", help="orbital basis of an extxyz import: a reference's (default xtb)")
    i.add_argument("--orbital-order", default=None, choices=["e3nn", "deeph", "standard", "pyscf"],
                   help="orbital order of DeepH folders (default: their info.json; deeph for DeepH-pack's)")
    i.set_defaults(func=_import)
    x = sub.add_parser("export", help="write every sample of a dataset as extxyz (energy, forces, stress, layer)")
    x.add_argument("file")
    x.add_argument("out", help="the extxyz file to write")
    x.set_defaults(func=_export_extxyz)
    k = sub.add_parser("calibrate", help="a committee's spread against its error on held-out labelled cells: "
                       "Spearman, reliability plot, calibrated scales (stored in committee.json)")
    k.add_argument("committee", help="the committee's run directory (hedgenet-train committee.size=K) or committee.json")
    k.add_argument("datasets", nargs="+", help="held-out labelled datasets (.h5) the members were not trained on")
    k.add_argument("--out", default=None, help="where reliability.png and calibration.json go (default: the committee's folder)")
    k.add_argument("--no-store", action="store_true", help="measure only: leave the committee file's scales as they are")
    k.add_argument("--trust-factor", type=float, default=2.0,
                   help="physics runs warn when the committee's spread on what they evaluate exceeds this factor "
                        "times the held-out RMS error (default 2)")
    k.set_defaults(func=_calibrate)
    args = p.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, KeyError, RuntimeError, FileNotFoundError) as err:
        print(f"hedgenet-dataset: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
