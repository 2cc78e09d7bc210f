"""Lattice constants and interlayer distances relaxed with the chosen reference solver (cached).

A material config lists relaxation steps; each minimises the energy per atom (eV/atom) over one
structural parameter (Å) of a builder within bounds, holding the parameters found so far fixed::

    relax:
      - {parameter: a, builder: monolayer_graphene, supercell: [6, 6], bounds: [2.38, 2.54]}
      - {parameter: d, builder: bilayer_graphene,   supercell: [4, 4], bounds: [3.0, 3.9]}

Results are cached as JSON in ``<cache_dir>/relaxed/<key>.json``, keyed by the material parameters, the
steps and the reference settings, so a second run with the same settings costs nothing.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from hedgenet.structures import BUILDERS, build_structure, make_supercell


def _builder_kwargs(builder: str, params: dict) -> dict:
    accepted = inspect.signature(BUILDERS[builder]).parameters
    return {k: v for k, v in params.items() if k in accepted}


def relax_parameters(
    fixed: dict,
    steps: list[dict],
    reference,
    cache_dir: str | Path | None = None,
    tol_A: float = 2e-4,
    log=print,
) -> dict:
    """Return ``fixed`` plus the relaxed parameters (Å), minimising reference energy per atom."""
    steps = [dict(s) for s in steps]
    for s in steps:
        missing = {"parameter", "builder", "bounds"} - set(s)
        if missing:
            raise ValueError(f"relax step {s} lacks {sorted(missing)}")
        if s["builder"] not in BUILDERS:
            raise ValueError(f"relax step builder {s['builder']!r} unknown; valid: {sorted(BUILDERS)}")
        if s["parameter"] in fixed:
            raise ValueError(
                f"material parameter {s['parameter']!r} is both fixed ({fixed[s['parameter']]}) and "
                "relaxed. Fix: remove it from material.params or from material.relax."
            )
    key_payload = {"fixed": fixed, "steps": steps, "reference": reference.settings_hash(), "tol": tol_A}
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / "relaxed" / f"{key}.json" if cache_dir is not None else None
    if cache is not None and cache.exists():
        return {**fixed, **json.loads(cache.read_text())["relaxed"]}

    params = dict(fixed)
    relaxed, history = {}, []
    for s in steps:
        name, lo, hi = s["parameter"], float(s["bounds"][0]), float(s["bounds"][1])
        sc = s.get("supercell", [1, 1])

        def energy_per_atom(x, s=s, name=name, sc=sc):
            trial = {**params, name: float(x)}
            atoms = build_structure(s["builder"], **_builder_kwargs(s["builder"], trial))
            atoms = make_supercell(atoms, sc)
            e = reference.energy(atoms) / len(atoms)
            history.append({"parameter": name, "value": float(x), "energy_per_atom_eV": e})
            return e

        res = minimize_scalar(energy_per_atom, bounds=(lo, hi), method="bounded", options={"xatol": tol_A})
        x = float(res.x)
        if min(x - lo, hi - x) < 5 * tol_A:
            raise RuntimeError(
                f"relaxing {name} with {s['builder']} hit the bound ({x:.4f} Å in [{lo}, {hi}]): the "
                "minimum lies outside. Fix: widen material.relax bounds."
            )
        params[name] = x
        relaxed[name] = x
        log(f"relaxed {name} = {x:.4f} Å ({s['builder']}, supercell {list(sc)}, {res.nfev} evaluations)")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"relaxed": relaxed, "history": history, "key": key_payload}, indent=1, default=str))
        tmp.replace(cache)
    return params


def relaxed_structure(material: dict, reference, cache_dir=None, log=print):
    """Build a material's unit cell with its relaxed parameters; returns (atoms, parameters)."""
    fixed = dict(material.get("params", {}))
    params = relax_parameters(fixed, list(material.get("relax", [])), reference, cache_dir, log=log)
    atoms = build_structure(material["builder"], **_builder_kwargs(material["builder"], params))
    return atoms, {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in params.items()}
