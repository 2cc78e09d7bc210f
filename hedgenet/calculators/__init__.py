"""One interface over a reference solver or a trained model: energy (eV), forces (eV/Å), H/S blocks, force
constants (eV/Å²) and block derivatives dH/du (eV/Å), dS/du (1/Å).

Physics code (phonons, couplings, Monte Carlo) takes a :class:`BlockCalculator` and cannot tell whether
the numbers come from GFN1-xTB, DFT or a network: that is what makes "model vs direct finite
differences with the reference" the same code. Both kinds are also ASE calculators (energy, forces).
Physics never touches a model directly: a model's exact derivatives (autograd Hessian, forward-mode
dH/du) are ``method="autograd"`` of the same two calls, which a reference answers by finite differences
(:mod:`~hedgenet.calculators.finite_differences`, :mod:`~hedgenet.calculators.autograd`).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from hedgenet.calculators.finite_differences import (
    finite_difference_block_derivatives,
    finite_difference_force_constants,
)
from hedgenet.orbitals.blocks import BlockDerivatives, BlockSet
from hedgenet.orbitals.layout import OrbitalLayout
from hedgenet.reference.base import Reference


class BlockCalculator(Calculator):
    """ASE calculator (energy eV, forces eV/Å) that also returns orbital blocks H_ij(R), S_ij(R)."""

    implemented_properties = ["energy", "free_energy", "forces"]
    layout: OrbitalLayout
    block_cutoff: float

    DERIVATIVE_METHODS: tuple[str, ...] = ("finite_differences",)
    """Ways this calculator can differentiate (``method=`` of :meth:`force_constants`, :meth:`block_derivatives`)."""

    def predict_hamiltonian(self, atoms: Atoms) -> BlockSet:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_hamiltonians(self, structures) -> list[BlockSet]:
        """:meth:`predict_hamiltonian` of many structures (e.g. the Monte Carlo samples of a temperature); a model
        batches them (:meth:`ModelCalculator.predict_hamiltonians`)."""
        return [self.predict_hamiltonian(a) for a in structures]

    def _check_method(self, method: str, what: str) -> None:
        if method not in self.DERIVATIVE_METHODS:
            raise ValueError(f"{what} method={method!r} is not available with {type(self).__name__}; valid: "
                             f"{list(self.DERIVATIVE_METHODS)} (autograd differentiates a model: calculator=model)")

    def force_constants(self, unit: Atoms, supercell_matrix, distance_A: float = 0.01,
                        method: str = "finite_differences", progress: bool = False):
        """Phonopy object of the supercell ``supercell_matrix`` of ``unit`` with force constants Φ (eV/Å²).

        ``finite_differences``: forces at phonopy's symmetry-reduced ± ``distance_A`` (Å) displacements.
        No sum rule is imposed: see :func:`hedgenet.physics.phonons.enforce_acoustic_sum_rule`."""
        self._check_method(method, "force constants")
        return finite_difference_force_constants(self, unit, supercell_matrix, distance_A, progress=progress)

    def block_derivatives(self, atoms: Atoms, delta_A: float = 0.005, method: str = "finite_differences",
                          use_translations: bool = True, progress: bool = False) -> BlockDerivatives:
        """dH/du (eV/Å) and dS/du (1/Å) of the blocks of ``atoms`` on its undisplaced edge list.

        ``finite_differences``: central differences at ± ``delta_A`` (Å); with ``use_translations`` only one
        atom per lattice-translation orbit of a supercell is displaced."""
        self._check_method(method, "block derivatives")
        return finite_difference_block_derivatives(self, atoms, delta_A, use_translations=use_translations,
                                                   progress=progress)


class ReferenceCalculator(BlockCalculator):
    """A :class:`~hedgenet.reference.base.Reference` as an ASE calculator with blocks. With a ``cache_dir`` its
    finite-difference force constants are kept in ``cache_dir/force_constants/<key>.npz`` (key: relaxed unit
    cell, supercell, solver settings, displacement), as computed (no sum rule imposed): the labelling, the
    phonons and the couplings of one material and reference share one set of reference runs per cell."""

    def __init__(self, reference: Reference, cache_dir=None, **kwargs):
        super().__init__(**kwargs)
        self.reference = reference
        self.layout = reference.layout
        self.block_cutoff = reference.block_cutoff
        self.cache_dir = cache_dir

    def force_constants_cache_file(self, unit: Atoms, supercell_matrix, distance_A: float):
        """Where the force constants of these settings are kept (it may not exist); None without a cache."""
        import hashlib
        import json
        from pathlib import Path

        from hedgenet.structures.supercell import supercell_matrix as as_matrix

        if self.cache_dir is None:
            return None
        payload = {
            "numbers": unit.numbers.tolist(),
            "positions": np.round(unit.positions, 8).tolist(),
            "cell": np.round(unit.cell.array, 8).tolist(),
            "supercell": as_matrix(supercell_matrix).tolist(),
            "reference": self.reference.settings_hash(),
            "distance_A": float(distance_A),
        }
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
        return Path(self.cache_dir) / "force_constants" / f"{key}.npz"

    def force_constants(self, unit: Atoms, supercell_matrix, distance_A: float = 0.01,
                        method: str = "finite_differences", progress: bool = False):
        """As :meth:`BlockCalculator.force_constants`, from the cache when it holds them."""
        self._check_method(method, "force constants")
        cache = self.force_constants_cache_file(unit, supercell_matrix, distance_A)
        if cache is not None and cache.exists():
            from hedgenet.structures.supercell import make_phonopy

            phonon = make_phonopy(unit, supercell_matrix)
            phonon.generate_displacements(distance=float(distance_A))  # the displacements they were made from
            phonon.force_constants = np.load(cache)["force_constants"]
            return phonon
        phonon = super().force_constants(unit, supercell_matrix, distance_A, method, progress)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            np.savez(tmp, force_constants=phonon.force_constants)
            tmp.replace(cache)
        return phonon

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Energy (eV), forces (eV/Å) and the stress (eV/Å³, σ = −W/V) where the reference gives a virial W."""
        super().calculate(atoms, properties, system_changes)
        res = self.reference.compute(self.atoms, with_blocks=False)
        self.results = {"energy": res.energy_eV, "free_energy": res.energy_eV, "forces": res.forces_eV_per_A}
        if res.virial_eV is not None:
            self.results["stress"] = (-np.asarray(res.virial_eV) / self.atoms.get_volume()).flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise ValueError(f"the {self.reference.name} reference gives no stress (virial); use one that does (xtb)")

    def predict_hamiltonian(self, atoms: Atoms) -> BlockSet:
        """H_ij(R) (eV) and S_ij(R) within the reference's block cutoff, in e3nn orbital order."""
        return self.reference.compute(atoms, with_blocks=True).blocks


class ModelCalculator(BlockCalculator):
    """A trained model (``model.pt`` from ``hedgenet-train``) as an ASE calculator with blocks.

    ``predict_hamiltonian`` returns a :class:`BlockSet` with exactly the reference's edges (every (i, j, R)
    within the block cutoff plus self edges, in :func:`~hedgenet.orbitals.blocks.block_edges` order),
    padding and units (eV), so physics code cannot tell it from :class:`ReferenceCalculator`.
    """

    def __init__(self, model, device: str = "auto", uncertainty: bool = True, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            from hedgenet.models.io import load_model

            model = load_model(model)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.builder = model.graph_builder()
        self.layout = model.layout
        self.block_cutoff = model.block_cutoff
        from hedgenet.models.last_layer import LastLayerEstimate

        self.estimate = LastLayerEstimate.from_model(model) if uncertainty else None
        """The model's own uncertainty (:mod:`hedgenet.models.last_layer`, stored by ``hedgenet-train``), or None."""
        self.spread_record: dict[str, list[float]] = {"forces": [], "H": []}
        """Per evaluation (a force call, a structure's blocks): the RMS over atoms of the per-atom force spread
        (eV/Å) and over blocks of the per-block H spread (eV), calibrated where the estimate is: what
        :meth:`trust` summarises for a physics run. Empty without an estimate."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def _graph(self, atoms: Atoms):
        """The model's graph of ``atoms`` on the calculator's device and in the model's dtype."""
        return self.builder.from_atoms(atoms).to(device=self.device, dtype=next(self.model.parameters()).dtype)

    def _features(self):
        """A context that captures the readout's last hidden features of each forward pass (nothing without an
        estimate)."""
        import contextlib

        from hedgenet.models.last_layer import readout_features

        return readout_features(self.model) if self.estimate is not None else contextlib.nullcontext([])

    def _raw_spreads(self, graph, phi) -> dict:
        """The estimate's raw spreads of one structure's ``graph`` from its readout features ``phi`` (a tensor)."""
        return self.estimate.spreads(graph, phi.double().cpu().numpy(), graph.species.cpu().numpy())

    def _record(self, raw: dict, quantity: str) -> np.ndarray:
        """The calibrated spread of ``quantity`` from the estimate's ``raw`` spreads, its RMS added to
        :attr:`spread_record`."""
        spread = self.estimate.scale(quantity) * raw[quantity]
        self.spread_record[quantity].append(float(np.sqrt(np.mean(spread**2))))
        return spread

    def trust(self) -> dict | None:
        """The trust signal of what this calculator has evaluated so far (:func:`trust_summary` of the model's
        own estimate), or None for a model file without one."""
        if self.estimate is None:
            return None
        return trust_summary(self.spread_record, self.estimate.calibration, "the model's last-layer estimate",
                             "hedgenet-train (train.uncertainty.method=last_layer) with validation cells")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Energy (eV), forces (eV/Å) and, when asked, the stress (eV/Å³, ASE's Voigt order, σ = −W/V from the
        model's virial W = −∂E/∂ε; V includes any vacuum, as for every periodic slab in ASE)."""
        super().calculate(atoms, properties, system_changes)
        if "forces" not in self.model.outputs:
            raise ValueError("this model was trained with task=hamiltonian: it predicts no energy or forces")
        want_stress = "stress" in properties
        g = self._graph(self.atoms)
        with self._features() as captured:
            out = self.model(g, compute_virial=want_stress)
        e = float(out["energy"][0])
        self.results = {"energy": e, "free_energy": e, "forces": out["forces"].detach().cpu().numpy().astype(float)}
        if self.estimate is not None:
            self.results["forces_std"] = self._record(self._raw_spreads(g, captured[-1]), "forces")
        if want_stress:
            sigma = -out["virial"][0].detach().cpu().numpy().astype(float) / self.atoms.get_volume()
            self.results["stress"] = sigma.flat[[0, 4, 8, 5, 2, 1]]

    def predict_hamiltonian(self, atoms: Atoms) -> BlockSet:
        """H_ij(R) (eV) and S_ij(R) for every block edge, padded to the layout's n_max for ``atoms``."""
        if "H" not in self.model.outputs:
            raise ValueError("this model was trained with task=forces: it predicts no Hamiltonian blocks")
        if self.estimate is not None:
            return self.predict_hamiltonian_with_spread(atoms)[0]
        g = self._graph(atoms)
        return blocks_from_prediction(g, self.model(g, compute_forces=False), self.layout, atoms.numbers)

    def predict_hamiltonian_with_spread(self, atoms: Atoms) -> tuple[BlockSet, dict]:
        """The blocks and the model's own spread per block (its stored estimate, calibrated): ``H_std`` (E,) eV,
        ``S_std`` (E,), ``*_raw`` before the calibration's scale, in the BlockSet's edge order — as
        :meth:`CommitteeCalculator.predict_hamiltonian_with_spread` for one model."""
        if "H" not in self.model.outputs:
            raise ValueError("this model was trained with task=forces: it predicts no Hamiltonian blocks")
        if self.estimate is None:
            raise ValueError("this model file holds no uncertainty estimate (trained with train.uncertainty.method=null, "
                             "before the estimate existed, or a family without a linear energy readout). Fix: retrain "
                             "it with hedgenet-train, or use a committee (hedgenet-train committee.size=K)")
        g = self._graph(atoms)
        with self._features() as captured:
            out = self.model(g, compute_forces=False)
        raw = self._raw_spreads(g, captured[-1])
        spread = {"H_std": self._record(raw, "H"), "S_std": self.estimate.scale("S") * raw["S"],
                  "H_std_raw": raw["H"], "S_std_raw": raw["S"]}
        return blocks_from_prediction(g, out, self.layout, atoms.numbers), spread

    def predict_hamiltonians(self, structures, batch_size: int = 8) -> list[BlockSet]:
        """:meth:`predict_hamiltonian` of many structures (e.g. the Monte Carlo samples of a temperature),
        ``batch_size`` of them per model call (one collated graph): the same blocks, fewer and larger calls —
        what a GPU needs to be busy."""
        if "H" not in self.model.outputs:
            raise ValueError("this model was trained with task=forces: it predicts no Hamiltonian blocks")
        with self._features() as captured:
            return _batched_blocks(self.model, self.builder, self.layout, self.device, list(structures), batch_size,
                                   on_batch=self._record_batch if self.estimate is not None else None,
                                   features=captured)

    def _record_batch(self, graphs, phi) -> None:
        """The H spread of each structure of one batched call (``phi``: the collated graph's features)."""
        first = 0
        for g in graphs:
            n = int(g.species.shape[0])
            self._record(self._raw_spreads(g, phi[first : first + n]), "H")
            first += n

    DERIVATIVE_METHODS = ("finite_differences", "autograd")

    def hessian(self, atoms: Atoms, rows_per_batch: int = 48):
        """The model's exact Hessian Φ (N, N, 3, 3) in eV/Å² at ``atoms`` (autograd, ``rows_per_batch`` rows of
        3N at a time: memory of a few force evaluations on large cells)."""
        from hedgenet.calculators.autograd import autograd_force_constants

        return autograd_force_constants(self.model, atoms, rows_per_batch=rows_per_batch)

    def force_constants(self, unit: Atoms, supercell_matrix, distance_A: float = 0.01,
                        method: str = "finite_differences", progress: bool = False):
        """As :meth:`BlockCalculator.force_constants`; ``method="autograd"``: the exact Hessian of the model's
        energy on the supercell (``distance_A`` unused)."""
        if method != "autograd":
            return super().force_constants(unit, supercell_matrix, distance_A, method, progress)
        from hedgenet.structures.supercell import make_phonopy, supercell_atoms

        phonon = make_phonopy(unit, supercell_matrix)
        phonon.force_constants = self.hessian(supercell_atoms(phonon, unit))
        return phonon

    def block_derivatives(self, atoms: Atoms, delta_A: float = 0.005, method: str = "finite_differences",
                          use_translations: bool = True, progress: bool = False) -> BlockDerivatives:
        """As :meth:`BlockCalculator.block_derivatives`; ``method="autograd"``: the model's exact derivatives
        by forward-mode autodiff, one Jacobian–vector product per atom and direction (no step size)."""
        if method != "autograd":
            return super().block_derivatives(atoms, delta_A, method, use_translations, progress)
        from hedgenet.calculators.autograd import autograd_block_derivatives

        if "H" not in self.model.outputs:
            raise ValueError("this model was trained with task=forces: it predicts no Hamiltonian blocks")
        return autograd_block_derivatives(self.model, atoms)


class CommitteeCalculator(ModelCalculator):
    """A committee of trained models (``committee.json`` of ``hedgenet-train committee.size=K``, or its run
    directory) as one calculator: energy, forces, stress, H and S blocks, force constants and dH/du are the
    members' mean, so physics code works unchanged and uses the mean predictions. The spread comes with them:

    - ``results["forces_std"]`` (N,) eV/Å per atom: the norm of the per-component sample std over members;
      ``results["energy_std"]`` eV; ``results["forces_std_raw"]`` before calibration;
    - :meth:`predict_hamiltonian_with_spread`: the mean blocks and ``{"H_std": (E,) eV, "S_std": (E,)}`` per block
      (Frobenius norm of the per-entry std over the block's orbitals), on the BlockSet's edges.

    ``calibrated=True`` multiplies the spreads by the scales stored in the committee file by
    ``hedgenet-dataset calibrate`` (or the committee's own calibration after training), so that
    ``s·spread`` matches the RMS error on held-out cells; without stored scales the raw spreads are returned and
    :attr:`calibrated` is False. Statistics: :mod:`hedgenet.models.committee`."""

    def __init__(self, committee, device: str = "auto", calibrated: bool = True, **kwargs):
        from hedgenet.models.committee import read_committee
        from hedgenet.models.io import load_model

        self.committee = read_committee(committee)
        members = [load_model(p) for p in self.committee["member_paths"]]
        first = members[0]
        for p, m in zip(self.committee["member_paths"][1:], members[1:]):
            if (tuple(m.outputs) != tuple(first.outputs) or list(m.elements) != list(first.elements)
                    or float(m.block_cutoff) != float(first.block_cutoff)
                    or (m.layout is None) != (first.layout is None)
                    or (m.layout is not None and m.layout.to_json() != first.layout.to_json())):
                raise ValueError(f"committee member {p} predicts other quantities, elements, orbitals or block cutoff "
                                 f"than {self.committee['member_paths'][0]}. Fix: a committee's members come from one "
                                 "hedgenet-train committee.size=K command")
        super().__init__(first, device=device, uncertainty=False, **kwargs)
        self.models = [m.to(self.device).eval() for m in members]
        self.builders = [m.graph_builder() for m in self.models]
        cal = self.committee.get("calibration") or {}
        self.calibrated = bool(calibrated and cal)
        self.scales = {q: float(cal.get(f"{q}_scale") or 1.0) if self.calibrated else 1.0 for q in ("forces", "H", "S")}
        # the force spread as it was calibrated: pooled over neighbours within this radius (Å; 0: the atom alone)
        self.force_spread_radius_A = float(cal.get("forces_spread_radius_A") or 0.0) if self.calibrated else 0.0
        self.spread_record = {"forces": [], "H": []}  # as ModelCalculator's, from the members' spread

    @property
    def size(self) -> int:
        return len(self.models)

    def _member_graphs(self, atoms: Atoms):
        for model, builder in zip(self.models, self.builders):
            yield model, builder.from_atoms(atoms).to(device=self.device, dtype=next(model.parameters()).dtype)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """The members' mean energy (eV), forces (eV/Å) and stress (eV/Å³), and the spreads (class docstring)."""
        from hedgenet.models.committee import force_statistics

        Calculator.calculate(self, atoms, properties, system_changes)
        if "forces" not in self.model.outputs:
            raise ValueError("this committee was trained with task=hamiltonian: it predicts no energy or forces")
        want_stress = "stress" in properties
        energies, forces, stresses = [], [], []
        for model, g in self._member_graphs(self.atoms):
            out = model(g, compute_virial=want_stress)
            energies.append(float(out["energy"][0]))
            forces.append(out["forces"].detach().cpu().numpy().astype(float))
            if want_stress:
                sigma = -out["virial"][0].detach().cpu().numpy().astype(float) / self.atoms.get_volume()
                stresses.append(sigma.flat[[0, 4, 8, 5, 2, 1]])
        mean_f, std_f = force_statistics(np.stack(forces), self.atoms.positions, self.atoms.cell.array,
                                         self.force_spread_radius_A)
        self.spread_record["forces"].append(float(self.scales["forces"] * np.sqrt(np.mean(std_f**2))))
        e = float(np.mean(energies))
        self.results = {"energy": e, "free_energy": e, "forces": mean_f, "forces_std": self.scales["forces"] * std_f,
                        "forces_std_raw": std_f, "energy_std": float(np.std(energies, ddof=1))}
        if want_stress:
            self.results["stress"] = np.mean(stresses, axis=0)

    def _combine(self, member_blocks: list) -> tuple[BlockSet, dict]:
        from hedgenet.models.committee import block_mask, block_statistics

        b0 = member_blocks[0]
        n_max = b0.H.shape[-1]
        mask = block_mask(b0.n_orb[b0.edge_index[0]], b0.n_orb[b0.edge_index[1]], n_max)
        H, H_std = block_statistics(np.stack([b.H for b in member_blocks]), mask)
        S, S_std = block_statistics(np.stack([b.S for b in member_blocks]), mask)
        spread = {"H_std": self.scales["H"] * H_std, "S_std": self.scales["S"] * S_std,
                  "H_std_raw": H_std, "S_std_raw": S_std}
        self.spread_record["H"].append(float(self.scales["H"] * np.sqrt(np.mean(H_std**2))))
        return BlockSet(b0.edge_index, b0.cell_shift, H, S, b0.n_orb), spread

    def trust(self) -> dict:
        """The trust signal of what this committee has evaluated so far (:func:`trust_summary`)."""
        out = trust_summary(self.spread_record, self.committee.get("calibration") if self.calibrated else None,
                            "the committee", f"hedgenet-dataset calibrate {self.committee['path']} <held-out dataset>")
        return {"committee": str(self.committee["path"]), **out}

    def predict_hamiltonian_with_spread(self, atoms: Atoms) -> tuple[BlockSet, dict]:
        """The members' mean blocks H_ij(R) (eV), S_ij(R) and their spread per block: ``H_std`` (E,) eV,
        ``S_std`` (E,) (calibrated when :attr:`calibrated`; ``*_raw`` before), in the BlockSet's edge order."""
        if "H" not in self.model.outputs:
            raise ValueError("this committee was trained with task=forces: it predicts no Hamiltonian blocks")
        blocks = []
        for model, g in self._member_graphs(atoms):
            blocks.append(blocks_from_prediction(g, model(g, compute_forces=False), self.layout, atoms.numbers))
        return self._combine(blocks)

    def predict_hamiltonian(self, atoms: Atoms) -> BlockSet:
        """The members' mean H_ij(R) (eV) and S_ij(R) (:meth:`predict_hamiltonian_with_spread` for the spread)."""
        return self.predict_hamiltonian_with_spread(atoms)[0]

    def predict_hamiltonians_with_spread(self, structures, batch_size: int = 8) -> list[tuple[BlockSet, dict]]:
        """:meth:`predict_hamiltonian_with_spread` of many structures, each member batched as
        :meth:`ModelCalculator.predict_hamiltonians`."""
        structures = list(structures)
        per_member = [_batched_blocks(m, b, self.layout, self.device, structures, batch_size)
                      for m, b in zip(self.models, self.builders)]
        return [self._combine(list(bs)) for bs in zip(*per_member)]

    def predict_hamiltonians(self, structures, batch_size: int = 8) -> list[BlockSet]:
        """The members' mean blocks of many structures (e.g. Monte Carlo samples), batched per member."""
        if "H" not in self.model.outputs:
            raise ValueError("this committee was trained with task=forces: it predicts no Hamiltonian blocks")
        return [b for b, _ in self.predict_hamiltonians_with_spread(structures, batch_size)]

    def hessian(self, atoms: Atoms, rows_per_batch: int = 48):
        """The Hessian (N, N, 3, 3) eV/Å² of the members' mean energy: the mean of their exact Hessians."""
        from hedgenet.calculators.autograd import autograd_force_constants

        return np.mean([autograd_force_constants(m, atoms, rows_per_batch=rows_per_batch) for m in self.models], axis=0)

    def block_derivatives(self, atoms: Atoms, delta_A: float = 0.005, method: str = "finite_differences",
                          use_translations: bool = True, progress: bool = False) -> BlockDerivatives:
        """As :meth:`ModelCalculator.block_derivatives` of the mean blocks (``autograd``: the mean of the
        members' exact dH/du, dS/du)."""
        if method != "autograd":
            return BlockCalculator.block_derivatives(self, atoms, delta_A, method, use_translations, progress)
        from hedgenet.calculators.autograd import autograd_block_derivatives

        if "H" not in self.model.outputs:
            raise ValueError("this committee was trained with task=forces: it predicts no Hamiltonian blocks")
        ds = [autograd_block_derivatives(m, atoms) for m in self.models]
        b0, _ = self._combine([d.blocks0 for d in ds])
        return BlockDerivatives(b0, np.mean([d.dH for d in ds], axis=0), np.mean([d.dS for d in ds], axis=0))


def _batched_blocks(model, builder, layout, device, structures, batch_size: int, on_batch=None,
                    features=None) -> list[BlockSet]:
    """Blocks of ``structures`` predicted by ``model``, ``batch_size`` structures per call (one collated graph);
    ``on_batch(graphs, phi)`` after each call with the readout features that call appended to ``features``."""
    from hedgenet.graphs.neighbors import collate

    out = []
    for start in range(0, len(structures), max(1, int(batch_size))):
        chunk = structures[start : start + max(1, int(batch_size))]
        graphs = [builder.from_atoms(a) for a in chunk]
        pred = model(collate(graphs).to(device=device, dtype=next(model.parameters()).dtype), compute_forces=False)
        if on_batch is not None:
            on_batch(graphs, features[-1])
        first = 0
        for g, atoms in zip(graphs, chunk):
            n = g.block_index.shape[1]
            out.append(blocks_from_prediction(g, {"H": pred["H"][first : first + n], "S": pred["S"][first : first + n]},
                                              layout, atoms.numbers))
            first += n
    return out


def blocks_from_prediction(graph, out: dict, layout: OrbitalLayout, numbers) -> BlockSet:
    """The :class:`BlockSet` (eV, float64, padded to the n_max of ``numbers``) of a model output ``out``
    (keys ``H``, ``S``) on ``graph`` (from the model's ``graph_builder``)."""
    import numpy as np

    n_orb = np.array([layout.n_orb(int(z)) for z in numbers], dtype=np.int64)
    n_max = int(n_orb.max())
    return BlockSet(
        edge_index=graph.block_index.cpu().numpy().astype(np.int64),
        cell_shift=graph.block_shift.cpu().numpy().round().astype(np.int64),
        H=out["H"].detach().cpu().numpy()[:, :n_max, :n_max].astype(float),
        S=out["S"].detach().cpu().numpy()[:, :n_max, :n_max].astype(float),
        n_orb=n_orb,
    )


def resolve_device(device: str = "auto"):
    """``"auto"`` → the first CUDA GPU when there is one, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as
    given (ValueError naming the fix when CUDA is asked for and absent)."""
    import torch

    name = str(device or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} unknown; valid: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but this machine has no CUDA GPU visible to torch "
                         f"(torch {torch.__version__}). Fix: device=auto or device=cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r}: hedgenet's models run on cpu or cuda")
    return dev


def is_committee(path) -> bool:
    """Whether ``path`` is a committee: a ``committee.json`` or a run directory holding one."""
    from pathlib import Path

    from hedgenet.models.committee import COMMITTEE_FILE

    p = Path(str(path))
    return p.suffix == ".json" or (p.is_dir() and (p / COMMITTEE_FILE).exists())


def make_calculator(kind: str, reference=None, model_path=None, cache_dir=None, device: str = "auto") -> BlockCalculator:
    """``kind='reference'``: the given :class:`Reference` as a calculator (its force constants cached in
    ``cache_dir`` when given); ``kind='model'``: the trained model at ``model_path`` (``model.pt`` of
    ``hedgenet-train``) on ``device`` (:func:`resolve_device`), or a committee (its run directory or
    ``committee.json``) as a :class:`CommitteeCalculator`. ValueError naming the fix otherwise."""
    if kind == "reference":
        if reference is None:
            raise ValueError("calculator=reference needs a reference solver (reference=xtb|pyscf_dft)")
        return ReferenceCalculator(reference, cache_dir=cache_dir)
    if kind == "model":
        from pathlib import Path

        if model_path is None or not Path(str(model_path)).exists():
            raise ValueError(
                f"calculator=model needs model_path=<run dir>/model.pt of a hedgenet-train run (or the run directory "
                f"or committee.json of a committee, hedgenet-train committee.size=K); got {model_path!r}"
            )
        if is_committee(model_path):
            return CommitteeCalculator(str(model_path), device=device)
        return ModelCalculator(str(model_path), device=device)
    raise ValueError(f"calculator={kind!r} unknown; valid: model, reference")


def check_calculator_for(calc: BlockCalculator, atoms: Atoms, reference_layout: OrbitalLayout | None = None,
                         need_blocks: bool = False) -> None:
    """Clear errors before expensive work: a model that lacks an element of ``atoms``, or whose orbital
    basis differs from the reference's (then its blocks cannot be compared or used in its place)."""
    from ase.data import chemical_symbols

    if isinstance(calc, ModelCalculator):
        missing = sorted(set(int(z) for z in atoms.numbers) - set(calc.model.elements))
        if missing:
            raise ValueError(
                f"the model knows elements {[chemical_symbols[z] for z in calc.model.elements]} but the structure "
                f"has {[chemical_symbols[z] for z in missing]}. Fix: train on data of this material."
            )
        if need_blocks and calc.layout is None:
            raise ValueError("this model was trained with task=forces: it predicts no Hamiltonian blocks. "
                             "Fix: use a model trained with task=joint or task=hamiltonian.")
        if need_blocks and reference_layout is not None:
            for z in sorted(set(int(z) for z in atoms.numbers)):
                if calc.layout.shells_of(z) != reference_layout.shells_of(z):
                    raise ValueError(
                        f"the model's orbitals for {chemical_symbols[z]} are shells {calc.layout.shells_of(z)} "
                        f"({calc.layout.basis_name}) but the reference uses {reference_layout.shells_of(z)} "
                        f"({reference_layout.basis_name}). Fix: use a model trained on this reference's labels."
                    )


def reference_unit_cell(material: dict, reference_cfg: dict, cache_dir, log=print):
    """The reference solver of a ``reference`` config (``name`` + settings) and the material's unit cell
    relaxed with it (cached in ``cache_dir``): ``(reference, unit cell, structure parameters in Å)``."""
    from pathlib import Path

    from hedgenet.reference import make_reference
    from hedgenet.reference.relax import relaxed_structure

    settings = {k: v for k, v in dict(reference_cfg).items() if k != "name"}
    reference = make_reference(reference_cfg["name"], **settings)
    unit, params = relaxed_structure(material, reference, Path(cache_dir), log=log)
    return reference, unit, params


def setup_calculation(cfg, need_blocks: bool = False, supercell=None):
    """Reference, calculator and relaxed unit cell for a physics CLI (``calculator=reference|model``).

    Every input check runs before the first expensive call: the calculator and its fit to the material
    (elements, orbital basis when ``need_blocks``) on the unrelaxed structure, and, with the reference as
    calculator, whether ``supercell`` is wide enough for its block cutoff. Returns
    ``(reference, calculator, unit cell, structure parameters)``; ValueErrors become ConfigErrors."""
    from pathlib import Path

    from hedgenet.config import ConfigError, resolved_dict
    from hedgenet.reference import make_reference, reference_settings
    from hedgenet.reference.relax import relaxed_structure
    from hedgenet.structures import build_structure
    from hedgenet.structures.supercell import make_phonopy, supercell_atoms

    reference = make_reference(cfg.reference.name, **reference_settings(cfg))
    try:
        calc = make_calculator(cfg.calculator, reference, cfg.model_path, cache_dir=Path(cfg.paths.cache_dir),
                               device=str(cfg.get("device", "auto")))
        check_calculator_for(calc, build_structure(cfg.material.builder, **resolved_dict(cfg.material.params)),
                             reference.layout, need_blocks=need_blocks)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    unit, params = relaxed_structure(resolved_dict(cfg.material), reference, Path(cfg.paths.cache_dir))
    if cfg.calculator == "reference" and need_blocks and supercell is not None:
        try:
            reference.check_cell(supercell_atoms(make_phonopy(unit, list(supercell)), unit))
        except ValueError as err:
            raise ConfigError(str(err)) from err
    return reference, calc, unit, params


def trust_summary(spread_record: dict, calibration: dict | None, source: str, calibrate_fix: str) -> dict:
    """The trust signal of a physics run from the spreads its calculator recorded (``spread_record``: per quantity
    the RMS spread of each evaluation, eV/Å for forces, eV for H): per quantity the number of evaluations, the
    largest and the mean spread, the threshold (the held-out RMS error of the ``calibration`` times its
    ``trust_factor``) and whether the largest spread exceeds it; ``warnings`` says so in words, naming
    ``source`` (also when there is no calibration, so the spreads are raw: ``calibrate_fix`` says how to get one)."""
    cal = calibration or {}
    factor = float(cal.get("trust_factor") or 2.0)
    out: dict = {"source": source, "calibrated": bool(calibration), "trust_factor": factor, "warnings": []}
    units = {"forces": ("eV/Å", 1e3, "meV/Å"), "H": ("eV", 1e3, "meV")}
    for q, values in spread_record.items():
        if not values:
            continue
        rms_error = cal.get(f"{q}_rms_error")
        threshold = None if rms_error is None else factor * float(rms_error)
        entry = {"n_evaluations": len(values), "max": float(np.max(values)), "mean": float(np.mean(values)),
                 "unit": units[q][0], "held_out_rms_error": rms_error, "threshold": threshold,
                 "exceeds": threshold is not None and float(np.max(values)) > threshold}
        out[q] = entry
        if entry["exceeds"]:
            _, k, u = units[q]
            out["warnings"].append(
                f"{source}: the {q} spread reaches {k * entry['max']:.3g} {u} (RMS over the structure) on what this "
                f"run evaluated, above {factor:g} × its held-out RMS error ({k * float(rms_error):.3g} {u}): these "
                "configurations lie outside what the model was trained and calibrated on. Fix: label such "
                "configurations (hedgenet-active with this run's temperatures) and retrain")
    if not calibration and any(spread_record.values()):
        out["warnings"].append(f"{source} is not calibrated: its spreads are raw and have no threshold. Fix: "
                               f"{calibrate_fix}")
    return out
