"""Data in and out of hedgenet's HDF5 datasets: your own labels from extxyz (energy, forces, stress) or DeepH
folders (H, S, positions, lattice), and any dataset out as extxyz.

    hedgenet-dataset import my_data.h5 frames.extxyz                # energy eV, forces eV/Å (and stress)
    hedgenet-dataset import my_blocks.h5 deeph/0 deeph/1 deeph/2    # DeepH folders: H, S blocks
    hedgenet-dataset export data/ab_bilayer_graphene_default.h5 all.extxyz

An imported file is a dataset like one ``hedgenet-label`` writes (``hedgenet-train data.paths=[my_data.h5]``):
one sample per frame or folder (kind ``imported``, the source in ``source``), the first structure as the
reference cell, layers from a ``layer`` column or detected from covalent bonds. Frames from extxyz carry no
Hamiltonian: train them with ``task=forces``; DeepH folders carry no energy or forces: ``task=hamiltonian``.
The orbital basis of an extxyz import is the one named by ``basis`` (a reference's, default xTB's; it only
matters for a later Hamiltonian head); a DeepH folder brings its own (``orbital_types.dat``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from ase import Atoms

from hedgenet.data.store import DatasetError, DatasetStore, sample_atoms
from hedgenet.structures.layers import layer_index


def _frame_labels(atoms: Atoms, where: str) -> dict:
    """energy (eV), forces (eV/Å) and, with a stress, the virial W = −σ V (eV) of one extxyz frame."""
    fix = ("Fix: write every frame with its energy and forces (ase.io.write(..., format='extxyz') of Atoms "
           "with a calculator, or energy=<eV> in the comment line and a forces column in eV/Å)")
    try:
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    except Exception:  # noqa: BLE001 - no calculator, or one without the property
        energy, forces = atoms.info.get("energy"), atoms.arrays.get("forces")
    if energy is None or forces is None:
        raise DatasetError(f"{where}: no energy and forces. {fix}")
    out = {"energy": np.float64(energy), "forces": np.asarray(forces, dtype=float)}
    try:
        stress = atoms.get_stress(voigt=False)
    except Exception:  # noqa: BLE001 - no stress in the frame: no virial label
        stress = None
    if stress is not None and atoms.cell.rank == 3:
        out["virial"] = -np.asarray(stress, dtype=float) * atoms.get_volume()
    return out


def _structure_arrays(atoms: Atoms) -> dict:
    return {"positions": atoms.positions, "cell": atoms.cell.array, "numbers": atoms.numbers,
            "layer": layer_index(atoms), "pbc": np.asarray(atoms.pbc)}


def _reference_layout(basis: str):
    from hedgenet.reference import make_reference

    return make_reference(basis).layout


def _longest_block_A(samples) -> float | None:
    """The longest atom pair (Å) with a stored block over the samples that have blocks, rounded up to 0.01 Å."""
    longest = None
    for atoms, arrays, _ in samples:
        if "edge_index" not in arrays:
            continue
        i, j = arrays["edge_index"]
        vec = atoms.positions[j] + arrays["cell_shift"] @ atoms.cell.array - atoms.positions[i]
        d = float(np.linalg.norm(vec, axis=1).max(initial=0.0))
        longest = d if longest is None else max(longest, d)
    return None if longest is None else float(np.ceil(longest * 100 + 1e-9) / 100)


def import_sources(out, sources, basis: str = "xtb", orbital_order: str | None = None,
                   block_cutoff_A: float = 5.0) -> DatasetStore:
    """Write the extxyz files and/or DeepH folders ``sources`` into a new dataset ``out`` (module docstring).
    ``orbital_order``: of the DeepH folders' blocks (default: their info.json's; ``deeph`` for folders that
    DeepH-pack preprocessed from OpenMX or ABACUS). Refuses an existing ``out`` (nothing is overwritten) and
    mixed orbital bases. ``block_cutoff_A`` (Å) is the dataset's block cutoff, which a model trained on it takes;
    with DeepH folders it is the longest stored block pair instead."""
    from hedgenet.data.build import provenance
    from hedgenet.data.deeph_format import import_deeph

    out = Path(out)
    store = DatasetStore(out)
    if store.exists():
        raise DatasetError(f"{out} exists: an import writes a new dataset. Fix: choose another output file "
                           "(hedgenet-dataset merge combines datasets afterwards)")
    samples, layout = [], None
    for src in map(Path, sources):
        if src.is_dir():
            atoms, blocks, this, info = import_deeph(src, orbital_order=orbital_order)
            if layout is not None and this.shells != layout.shells:
                raise DatasetError(f"{src}: orbital basis {this.shells} differs from the earlier folders' "
                                   f"{layout.shells}. Fix: import folders of one basis into one dataset")
            layout = this
            arrays = {**_structure_arrays(atoms), "edge_index": blocks.edge_index, "cell_shift": blocks.cell_shift,
                      "H": blocks.H, "S": blocks.S, "orbital_mask": this.orbital_mask(atoms.numbers)}
            attrs = {"source": str(src)}
            if info.get("fermi_level_eV") is not None:
                attrs["fermi_level_eV"] = float(info["fermi_level_eV"])
            samples.append((atoms, arrays, attrs))
        elif src.is_file():
            import ase.io

            try:
                frames = ase.io.read(src, index=":")
            except Exception as err:  # noqa: BLE001 - ASE raises many types for unreadable files
                raise DatasetError(f"{src}: ASE cannot read it ({type(err).__name__}: {err}). Fix: give an extxyz "
                                   "file (or any format ASE reads with energies and forces)") from None
            for k, atoms in enumerate(frames):
                arrays = {**_structure_arrays(atoms), **_frame_labels(atoms, f"{src} frame {k}")}
                samples.append((atoms, arrays, {"source": f"{src}@{k}"}))
        else:
            raise DatasetError(f"{src}: no such file or folder. Fix: give extxyz files or DeepH folders")
    if not samples:
        raise DatasetError(f"nothing to import from {list(map(str, sources))}")
    layout = layout or _reference_layout(basis)
    digest = hashlib.sha256(json.dumps([a[2]["source"] for a in samples]).encode()).hexdigest()[:16]
    first = samples[0][0]
    cutoff = _longest_block_A(samples) or float(block_cutoff_A)
    with store.locked():
        store.create({"fingerprint": f"import:{digest}", "orbital_layout": layout.to_json(),
                      "solver_settings": {"name": "imported", "block_cutoff_A": cutoff},
                      "material": {"name": out.stem, "builder": "file", "params": {}},
                      "supercell": [1, 1], "config": "", "provenance": provenance(),
                      "imported_from": [str(s) for s in sources]}, first)
        for sample_id, (atoms, arrays, attrs) in enumerate(samples):
            arrays = {**arrays, "displacement": np.zeros((len(atoms), 3))}
            store.stage(sample_id, arrays, {"sample_id": sample_id, "kind": "imported", "status": "ok", "time_s": 0.0,
                                            **attrs})
        store.consolidate()
    return store


def export_extxyz(dataset, out) -> int:
    """Every sample of ``dataset`` as one extxyz frame of ``out`` (energy eV, forces eV/Å, stress eV/Å³ from the
    virial, the ``layer`` column, ``sample_id`` and ``kind`` in the comment line); returns the number written."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for s in DatasetStore(dataset).iter_samples():
        atoms = sample_atoms(s)
        results = {}
        if "energy" in s:
            results["energy"] = float(s["energy"])
        if "forces" in s:
            results["forces"] = np.asarray(s["forces"])
        if "virial" in s and atoms.cell.rank == 3:
            results["stress"] = -np.asarray(s["virial"]) / atoms.get_volume()
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update(sample_id=int(s["sample_id"]) if "sample_id" in s else len(frames), kind=str(s.get("kind", "")))
        frames.append(atoms)
    ase.io.write(out, frames, format="extxyz")
    return len(frames)
