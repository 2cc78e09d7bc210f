"""Building a labelled dataset: the displaced supercells of a recipe (rattles, thermal samples), labelled by
a reference solver into the HDF5 store, resumable, with a fingerprint and provenance in the file header."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from hedgenet.structures.layers import layer_index


def label_material(unit, params: dict, reference, reference_spec: dict, dataset: dict, seed: int, material: dict,
                   thermal_force_constants=None, config_yaml: str = "", progress: bool = False,
                   force_constants_of=None, couplings_of=None, blocks_of=None) -> dict:
    """Build the displaced supercells of ``dataset`` (the ``dataset`` config section, resolved) for the relaxed
    ``unit`` cell and label them with ``reference`` into the HDF5 store; returns the store's summary.

    ``reference_spec``: ``{"name": ..., **settings}`` of ``reference``, from which worker processes make their own.

    ``thermal_force_constants()``: a phonopy object with the reference's force constants of the labelling
    supercell, called only when thermal samples or the force constants themselves (``dataset.force_constants``,
    stored in the file for the force-constant loss) are asked for. ``force_constants_of(supercell)``: the same
    for another supercell of ``unit``, when ``dataset.force_constants_supercell`` asks to store those instead.
    ``couplings_of(cell, delta_A)``: the reference's dH/du, dS/du of the force-constant cell, stored when
    ``dataset.couplings`` asks for them (:func:`store_couplings`). ``blocks_of(atoms)``: the reference's H and S
    blocks of one structure, for the second-order response that ``dataset.second_order`` asks for
    (:func:`store_second_order`).
    Resumable: a store that exists must have the same fingerprint; finished samples are kept; stored force
    constants of another cell than the one asked for are replaced (the samples stay)."""
    from hedgenet.data.labelling import label_dataset
    from hedgenet.data.store import DatasetStore
    from hedgenet.reference import make_reference
    from hedgenet.structures.supercell import make_phonopy, supercell_atoms

    d = dataset
    # Structure: phonopy's supercell of the relaxed unit cell (checked before any expensive work).
    base = supercell_atoms(make_phonopy(unit, list(d["supercell"])), unit)
    reference.check_elements(base)
    reference.check_cell(base)

    fc_supercell = list(d.get("force_constants_supercell") or d["supercell"])
    own_cell = fc_supercell == list(d["supercell"])  # the stored force constants are the thermal sampler's
    pairs, pair_T = second_order_request(d)
    phonon = (thermal_force_constants() if wants_thermal(d) or (d.get("force_constants") and own_cell) or pairs
              else None)
    specs = recipe_specs(base, d, seed, phonon, reference)
    path = dataset_path(d)
    if d["num_shards"] > 1:
        specs = [s for s in specs if s.sample_id % d["num_shards"] == d["shard_index"]]

    store = DatasetStore(path)
    fingerprints = dataset_fingerprints(params, material["builder"], d, seed, reference)
    fingerprint = fingerprints[0]
    stored_fc = None
    if d.get("force_constants"):
        step = float(d["thermal"]["fc_displacement_A"])
        if own_cell:
            stored_fc = (phonon.force_constants, step, None)
        else:
            target = force_constants_of(fc_supercell)
            stored_fc = (target.force_constants, step, supercell_atoms(target, unit))
    with store.locked():  # one labelling run per dataset, from its creation to the last sample
        if store.exists():
            store.check_fingerprint(fingerprints)
            if stored_fc is not None and store.force_constants_atoms() != len(stored_fc[0]):  # none, or another cell
                store.add_force_constants(*stored_fc)  # (drops couplings of another cell)
        else:
            store.create(
                {
                    "fingerprint": fingerprint,
                    "solver_settings": reference.settings(),
                    "orbital_layout": reference.layout.to_json(),
                    "material": {"name": material["name"], "builder": material["builder"], "params": params},
                    "supercell": list(d["supercell"]),
                    "config": config_yaml,
                    "provenance": provenance(),
                },
                base,
                force_constants=stored_fc,
            )
        counts = label_dataset(
            store, base, specs, make_reference, reference_spec,
            n_workers=d["n_workers"], consolidate_every_s=d["consolidate_every_s"], progress=progress,
            reference=reference,
        )
        if d.get("couplings"):
            store_couplings(store, couplings_of, base if own_cell or stored_fc is None else stored_fc[2],
                            float(d["couplings_displacement_A"]))
        if pairs:
            store_second_order(store, blocks_of, base, phonon, pairs, pair_T, seed)
    summary = store.summary()
    summary.update(
        material=material["name"], reference=reference.name, structure_params=params,
        block_cutoff_A=reference.block_cutoff, this_run=counts,
    )
    if summary["n_failed"]:
        summary["failures"] = {str(k): v for k, v in store.failures().items()}
    return summary


def store_couplings(store, couplings_of, cell, delta_A: float) -> None:
    """Store the reference's couplings dH/du, dS/du of the undisplaced ``cell`` (the force-constant cell) in
    ``store`` unless it holds those of a cell of that size already. ``couplings_of(cell, delta_A)``: the
    reference's :class:`~hedgenet.orbitals.blocks.BlockDerivatives` by central differences at ± ``delta_A`` Å,
    one atom per lattice orbit displaced (6 reference runs per atom of the primitive cell); the rows of those
    atoms are stored: the target of the coupling loss (``train.loss_weights.couplings``)."""
    from hedgenet.structures.supercell import lattice_translations, orbit_representatives

    if store.couplings_atoms() == len(cell):
        return
    if couplings_of is None:
        raise ValueError("dataset.couplings=true needs the reference's block derivatives (couplings_of)")
    bd = couplings_of(cell, delta_A)
    reps = orbit_representatives(lattice_translations(cell)[0])  # the atoms couplings_of displaced
    b0 = bd.blocks0
    store.add_couplings(reps, bd.dH[reps], bd.dS[reps], b0.edge_index, b0.cell_shift, b0.n_orb, delta_A)


def second_order_request(dataset: dict) -> tuple[int, float]:
    """(pairs, temperature K) of ``dataset.second_order`` (checked by hedgenet-label at start): (0, ·) for none."""
    so = dataset.get("second_order") or {}
    return int(so.get("n_pairs", 0) or 0), float(so.get("temperature_K", 300.0))


def store_second_order(store, blocks_of, cell, phonon, pairs: int, temperature_K: float, seed: int) -> None:
    """Store the reference's even response ½[H(u) + H(−u)] − H(0) (and S's) of the labelling supercell ``cell``
    to ``pairs`` thermal displacements u at ``temperature_K`` (drawn from ``phonon``, the labelling cell's force
    constants, as the thermal samples are, from their own seeds), unless the file holds those of these settings:
    2·pairs + 1 reference runs. It is what the second-order electron–phonon coupling of v_F(T) is made of, and the
    target of the second-order loss (``train.loss_weights.second_order``)."""
    from hedgenet.data.displacements import thermal_specs
    from hedgenet.orbitals.blocks import edge_positions

    if store.second_order_settings() == (pairs, float(temperature_K)):
        return
    if blocks_of is None:
        raise ValueError("dataset.second_order needs the reference's blocks (blocks_of)")
    specs = thermal_specs(phonon, [temperature_K], pairs, seed, start_id=SECOND_ORDER_SEED_OFFSET)
    b0 = blocks_of(cell)
    shape = (pairs,) + b0.H.shape
    dH2, dS2 = np.zeros(shape), np.zeros(shape)
    present = np.ones((pairs, len(b0.cell_shift)), dtype=bool)
    for p, spec in enumerate(specs):
        for sign in (1.0, -1.0):
            atoms = cell.copy()
            atoms.positions = cell.positions + sign * spec.displacement
            b = blocks_of(atoms)
            where = edge_positions(b0.edge_index, b0.cell_shift, b.edge_index, b.cell_shift, len(cell))
            ok = where >= 0
            present[p] &= ok
            dH2[p][ok] += 0.5 * b.H[where[ok]]
            dS2[p][ok] += 0.5 * b.S[where[ok]]
        dH2[p] -= b0.H
        dS2[p] -= b0.S
    dH2[~present], dS2[~present] = 0.0, 0.0
    store.add_second_order(np.stack([s.displacement for s in specs]), dH2, dS2, present, b0.edge_index,
                           b0.cell_shift, b0.n_orb, temperature_K)


SECOND_ORDER_SEED_OFFSET = 1_000_000
"""The second-order pairs' sample ids start here: their displacements come from seeds that no sample of the
recipe uses."""


def wants_thermal(dataset: dict) -> bool:
    """Whether the recipe ``dataset`` has thermal samples (which need the reference's force constants)."""
    thermal = dataset["thermal"]
    return thermal["n_per_temperature"] > 0 and len(thermal["temperatures_K"]) > 0


def recipe_specs(base, dataset: dict, seed: int, phonon=None, reference=None) -> list:
    """The displaced supercells of the recipe ``dataset`` (a ``dataset`` config section, resolved: rattles,
    thermal samples drawn from ``phonon``'s force constants, rigid layer shifts, strained cells) of the supercell
    ``base``, numbered from 0 in that order; every sample derives from (``seed``, its id). With ``reference``, a
    strained cell too narrow for its block cutoff is refused before any labelling."""
    from hedgenet.data.displacements import rattle_specs, rigid_layer_specs, strain_specs, thermal_specs

    d = dataset
    rattle, thermal = d["rattle"], d["thermal"]
    specs = rattle_specs(len(base), list(rattle["amplitudes_A"]), rattle["n_per_amplitude"], seed)
    if wants_thermal(d):
        specs += thermal_specs(
            phonon, list(thermal["temperatures_K"]), thermal["n_per_temperature"], seed,
            start_id=len(specs), quantum=thermal["quantum"], cutoff_frequency_THz=thermal["cutoff_frequency_THz"],
        )
    shifts = (d.get("rigid") or {}).get("shifts_A") or []
    specs += rigid_layer_specs(layer_index(base), shifts, seed, start_id=len(specs))
    strain = d.get("strain") or {}
    specs += strain_specs(len(base), strain.get("strains") or [], float(strain.get("rattle_A", 0.0)), seed,
                          start_id=len(specs))
    for spec in specs:  # a strained cell must still be wide enough for the block cutoff (a shear narrows it too)
        if spec.strain is not None and reference is not None:
            reference.check_cell(spec.structure(base))
    return specs


def dataset_path(dataset: dict) -> Path:
    """The HDF5 file the ``dataset`` config section labels into (``dataset.path``, or its shard's file)."""
    path = Path(dataset["path"])
    if dataset["num_shards"] > 1:
        path = path.with_name(f"{path.stem}.shard{dataset['shard_index']}-of-{dataset['num_shards']}{path.suffix}")
    return path


def _numbers_as_floats(value):
    """``value`` with every int (not bool) a float, inside lists and dicts: 0 and 0.0 are one setting."""
    if isinstance(value, dict):
        return {k: _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def dataset_fingerprints(material_params: dict, builder: str, dataset: dict, seed: int, reference) -> tuple[str, str]:
    """What a dataset file is (material, supercell, displacement recipe, seed, solver settings): a resumed run
    must match it. Returns (the fingerprint a new file gets, the one files written before numbers were hashed as
    floats got): ``shifts_A=[[0, 0, 0.3]]`` and ``[[0.0, 0.0, 0.3]]`` are one recipe; older files still resume."""
    payload = {
        "material": {"builder": builder, "params": material_params},
        "supercell": list(dataset["supercell"]),
        "rattle": dataset["rattle"],
        "thermal": dataset["thermal"],
        "seed": seed,
        "reference": reference.settings(),
    }
    if (dataset.get("rigid") or {}).get("shifts_A"):  # absent for recipes without rigid shifts: their files resume
        payload["rigid"] = dataset["rigid"]
    if (dataset.get("strain") or {}).get("strains"):  # likewise for strained cells
        payload["strain"] = dataset["strain"]
    payload["reference"].pop("tblite_version", None)
    payload["thermal"] = {k: v for k, v in dict(payload["thermal"]).items() if k != "imaginary_threshold_THz"}  # a check, not data

    def digest(p) -> str:
        return hashlib.sha256(json.dumps(p, sort_keys=True, default=str).encode()).hexdigest()[:16]

    return digest(_numbers_as_floats(json.loads(json.dumps(payload, default=str)))), digest(payload)


def provenance() -> dict:
    import datetime
    import platform
    import subprocess

    import hedgenet

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "hedgenet_version": hedgenet.__version__,
        "git_commit": commit,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "argv": sys.argv,
    }
