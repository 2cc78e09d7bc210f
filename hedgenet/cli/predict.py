"""``hedgenet-predict``: a trained model applied to a structure file, its predictions as files other tools read.

    hedgenet-predict model_path=outputs/train/runs/<run>/model.pt structure=my_bilayer.vasp
    hedgenet-predict model_path=... structure=cell.extxyz predict.phonons=true predict.phonon_supercell=[7,7]

The structure is read as written (any format ASE reads; a slab with vacuum along z; layers from its ``layer``
column or from covalent bonds: docs/labelling.md). Writes into the run directory:

- ``predicted.extxyz``: the structure with the model's energy (eV) and forces (eV/Å) and the layer column
  (a committee, ``model_path=<its run directory>``: the members' mean; with a committee or a model's own stored
  uncertainty estimate, ``forces_std`` per atom in eV/Å, and the summary adds the largest and mean force and
  H-block spreads);
- ``blocks.h5`` (models with a Hamiltonian head): ``edge_index`` (2, E), ``cell_shift`` (E, 3), ``H`` (E, n, n)
  eV, ``S`` (E, n, n), ``n_orb`` per atom, the orbital layout and units as attributes (the block convention of
  docs/data_format.md);
- ``bands.npz`` and ``bands.png``: the cell's electronic bands along ``predict.path`` (eV; distances 1/Å);
- with ``predict.phonons=true``: ``phonopy_params.yaml`` (force constants included), ``FORCE_CONSTANTS``,
  ``band.yaml`` (phonopy's formats), ``gamma_modes.json`` and ``phonon_bands.png``;
- ``summary.json``: energy, force statistics, residual force per layer, the band gap at the charge-neutrality
  level, Γ phonon frequencies.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hedgenet.config import ConfigError, check_config, config_dir
from hedgenet.run_io import run_stage


def check_predict_config(cfg: DictConfig) -> None:
    check_config(cfg, "predict")
    p = cfg.predict
    if p.method not in ("finite_differences", "autograd"):
        raise ConfigError(f"predict.method={p.method!r} unknown; valid: finite_differences, autograd")
    if p.npoints < 2:
        raise ConfigError(f"predict.npoints={p.npoints}: at least 2 k-points per segment")


def write_blocks(path: Path, blocks, layout) -> None:
    """The predicted H, S blocks as HDF5 (eV; the block convention of docs/data_format.md)."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        f["edge_index"] = np.asarray(blocks.edge_index)
        f["cell_shift"] = np.asarray(blocks.cell_shift)
        f["H"] = np.asarray(blocks.H)
        f["S"] = np.asarray(blocks.S)
        f["n_orb"] = np.asarray(blocks.n_orb)
        layout_json = layout.to_json()
        f.attrs["orbital_layout"] = layout_json if isinstance(layout_json, str) else json.dumps(layout_json)
        f.attrs["units"] = json.dumps({"H": "eV", "S": "1", "cell_shift": "lattice vectors"})


def run_predict(cfg: DictConfig, run_dir: Path) -> dict:
    import ase.io
    import numpy as np
    from ase.calculators.singlepoint import SinglePointCalculator

    from hedgenet.calculators import check_calculator_for, make_calculator
    from hedgenet.structures.from_file import structure_from_file

    check_predict_config(cfg)
    p = cfg.predict
    try:
        atoms = structure_from_file(str(cfg.structure))
        calc = make_calculator("model", model_path=cfg.model_path, device=str(cfg.device))
        check_calculator_for(calc, atoms)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    work = atoms.copy()
    work.calc = calc
    energy, forces = float(work.get_potential_energy()), work.get_forces()
    out = atoms.copy()
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces)
    # spread per atom: a committee (model_path = its run directory) or a model's own stored estimate
    forces_std = calc.results.get("forces_std")
    if forces_std is not None:
        out.arrays["forces_std"] = np.asarray(forces_std, dtype=float)
    ase.io.write(run_dir / "predicted.extxyz", out, format="extxyz")
    layer = atoms.arrays["layer"]
    layer_force = [np.linalg.norm(forces[layer == k].mean(axis=0)) for k in np.unique(layer)]
    summary = {"structure": str(cfg.structure), "model_path": str(cfg.model_path), "n_atoms": len(atoms),
               "formula": atoms.get_chemical_formula(), "layers": int(len(np.unique(layer))),
               "energy_eV": energy, "energy_per_atom_eV": energy / len(atoms),
               "force_max_eV_A": float(np.linalg.norm(forces, axis=1).max()),
               "force_rms_eV_A": float(np.sqrt((forces**2).sum(axis=1).mean())),
               "layer_force_max_meV_A": 1e3 * float(max(layer_force)), "files": ["predicted.extxyz"], "notes": []}
    has_spread = hasattr(calc, "size") or calc.estimate is not None  # a committee, or the model's own estimate
    if forces_std is not None:
        source = ({"committee_size": int(calc.size), "spread_calibrated": bool(calc.calibrated)} if hasattr(calc, "size")
                  else {"uncertainty": "last_layer", "spread_calibrated": calc.estimate.calibration is not None})
        summary.update(**source, forces_std_max_eV_A=float(np.max(forces_std)),
                       forces_std_mean_eV_A=float(np.mean(forces_std)))
    if calc.layout is None:
        summary["notes"].append("the model was trained with task=forces: no Hamiltonian blocks or bands")
    else:
        if has_spread:
            blocks, spread = calc.predict_hamiltonian_with_spread(atoms)
            summary.update(H_std_max_eV=float(np.max(spread["H_std"])), H_std_mean_eV=float(np.mean(spread["H_std"])))
        else:
            blocks = calc.predict_hamiltonian(atoms)
        write_blocks(run_dir / "blocks.h5", blocks, calc.layout)
        summary["files"].append("blocks.h5")
        summary["n_blocks"] = int(blocks.edge_index.shape[1])
        n_orbitals = int(np.sum(blocks.n_orb))
        if p.bands and n_orbitals <= int(p.max_dense_orbitals):
            from hedgenet.physics.electronic_bands import electronic_bands
            from hedgenet.report.plots import plot_electronic_bands

            b = electronic_bands(blocks, atoms.cell.array, atoms.numbers, str(p.path), int(p.npoints))
            np.savez(run_dir / "bands.npz", distances=b.distances, energies_eV=b.energies_eV, ticks=b.ticks,
                     labels=np.array(b.labels), kpoints_frac=b.kpoints_frac, e_cnp_eV=b.e_cnp_eV)
            plot_electronic_bands(run_dir / "bands.png", b)
            summary.update(e_cnp_eV=b.e_cnp_eV, band_gap_on_path_eV=b.gap_eV, n_occupied_bands=b.n_occupied)
            summary["files"] += ["bands.npz", "bands.png"]
        elif p.bands:
            summary["notes"].append(f"{n_orbitals} orbitals exceed predict.max_dense_orbitals={p.max_dense_orbitals}: "
                                    "no dense bands (the sparse shift-invert tools handle such cells)")
    if p.phonons:
        from phonopy.file_IO import write_FORCE_CONSTANTS

        from hedgenet.physics.phonons import gamma_mode_summary, phonons_of
        from hedgenet.report.plots import plot_phonon_bands

        r = phonons_of(calc, atoms, list(p.phonon_supercell), float(p.fc_displacement_A), str(p.method), "GMKG")
        r.phonon.save(str(run_dir / "phonopy_params.yaml"), settings={"force_constants": True})
        write_FORCE_CONSTANTS(r.phonon.force_constants, filename=str(run_dir / "FORCE_CONSTANTS"))
        r.phonon.write_yaml_band_structure(filename=str(run_dir / "band.yaml"))
        (run_dir / "gamma_modes.json").write_text(json.dumps(r.gamma_modes, indent=1))
        plot_phonon_bands(run_dir / "phonon_bands.png", r.bands, r.dos_frequency_THz, r.dos, None, "model")
        summary.update(gamma_mode_summary(r.gamma_modes))
        summary["phonon_supercell"] = list(p.phonon_supercell)
        summary["files"] += ["phonopy_params.yaml", "FORCE_CONSTANTS", "band.yaml", "gamma_modes.json",
                             "phonon_bands.png"]
    return summary


def _report(summary: dict, run) -> None:
    print(f"{summary['formula']} ({summary['n_atoms']} atoms, {summary['layers']} layers): E = {summary['energy_eV']:.6f} eV, "
          f"max |F| = {summary['force_max_eV_A']:.4f} eV/Å, largest net layer force {summary['layer_force_max_meV_A']:.2f} meV/Å")
    if "band_gap_on_path_eV" in summary:
        print(f"bands: E_CNP = {summary['e_cnp_eV']:.4f} eV, gap on the path {summary['band_gap_on_path_eV']:.4f} eV")
    for k in ("gamma_interlayer_shear_THz", "gamma_layer_breathing_THz", "gamma_inplane_optical_max_THz"):
        if k in summary:
            print(f"{k:30s} {summary[k]:.4g}")
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"wrote {', '.join(summary['files'])} to {run.run_dir}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="predict")
def _main(cfg: DictConfig) -> None:
    run_stage("hedgenet-predict", cfg, run_predict, _report)


def main() -> None:
    from hedgenet.cli import run_hydra_app

    run_hydra_app(_main)


if __name__ == "__main__":
    main()
