"""Moiré scale: a trained model on a ≥ 10⁴-atom twisted bilayer, bands near E_CNP by sparse shift-invert,
beside GFN1-xTB (validated on the largest twisted cell xTB labels in reasonable time, extrapolated above).

    .venv/bin/python benchmarks/moire_scale.py --model <run dir>/model.pt \
        --lattice-from data/<twisted dataset>.h5
    .venv/bin/python benchmarks/moire_scale.py --model model.pt --big 3.89deg --validate 9.43deg   # quicker

Stages, each in its own subprocess so that its peak resident memory (``ru_maxrss``: torch allocations
included, which tracemalloc misses) is its own:

1. ``validate``: the ``--validate`` cell (default 6.01°, 364 atoms; it must not be in the training set)
   with xTB (forces, blocks within the model's block cutoff, Γ orbital energies) and with the model;
   dense generalized eigenvalues at Γ, M and K of the moiré cell; MAE of the eigenvalues within
   E_F ± ``--window`` eV (E_F: xTB's charge-neutrality level at K, the Dirac energy; bands matched by
   index), forces MAE, and the model's charge-neutrality level at K (the σ guess for the big cell).
2. ``predict``: the ``--big`` cell (default 1.12°, 10 444 atoms): graph construction, then one model call
   for energy, forces (autograd) and every H_ij(R), S_ij(R) block; blocks saved for the next stage.
3. ``bands``: sparse H(k), S(k) and the ``--n-bands`` eigenvalues nearest E_CNP at the ``--kpoints``
   (Γ by default; K of the moiré zone needs a complex factorisation: 2.1× Γ's time, 1.8× its memory)
   with :func:`hedgenet.physics.sparse_bands.charge_neutrality_point`; never a dense solve.

The xTB single point of the big cell is extrapolated as t = t_ref (N / N_ref)^p from
docs/benchmarks.md (6.01°: 56.9 s on 2 threads, p = 2.80 fitted over N ≥ 100) and from this run's own
one-thread validation call. Lattice constant a and interlayer distance d (Å) come from the header of a
labelled twisted dataset (``--lattice-from``), i.e. the reference-relaxed values the model was trained at.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from _common import print_table  # noqa: E402

K_MOIRE = (1 / 3, 1 / 3, 0.0)  # K of the moiré zone (120° cell convention)


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def twisted_cell(name: str, lattice_from: str):
    from hedgenet.data.store import DatasetStore
    from hedgenet.structures import COMMENSURATE_TWISTS, build_structure

    if name not in COMMENSURATE_TWISTS:
        raise SystemExit(f"unknown twist {name!r}; valid: {sorted(COMMENSURATE_TWISTS)}")
    p = DatasetStore(lattice_from).header()["material"]["params"]
    m, n = COMMENSURATE_TWISTS[name]
    return build_structure("twisted_bilayer_graphene", m=m, n=n, a=float(p["a"]), d=float(p["d"]))


def dense_bands(blocks, kpts):
    from hedgenet.orbitals.bloch import band_energies

    return band_energies(blocks.H, blocks.S, blocks.edge_index, blocks.cell_shift, blocks.n_orb, kpts)


def stage_validate(args) -> dict:
    import numpy as np
    import torch

    from hedgenet.calculators import blocks_from_prediction
    from hedgenet.models.io import load_model
    from hedgenet.orbitals.blocks import eigen_error_of_truncation
    from hedgenet.orbitals.layout import valence_electron_count
    from hedgenet.reference import make_reference

    model = load_model(args.model)
    atoms = twisted_cell(args.validate, args.lattice_from)
    n_occ = valence_electron_count(atoms.numbers) // 2
    xtb = make_reference("xtb", block_cutoff=model.block_cutoff)
    t0 = time.perf_counter()
    ref = xtb.compute(atoms, with_blocks=True)
    t_xtb = time.perf_counter() - t0
    builder = model.graph_builder()
    t0 = time.perf_counter()
    g = builder.from_atoms(atoms)
    out = model(g.to(dtype=next(model.parameters()).dtype))
    t_model = time.perf_counter() - t0
    blocks = blocks_from_prediction(g, out, model.layout, atoms.numbers)
    forces = out["forces"].detach().numpy().astype(float)
    names, kpts = ["Gamma", "M", "K"], [(0.0, 0.0, 0.0), (0.5, 0.0, 0.0), K_MOIRE]
    eps_ref, eps_mod = dense_bands(ref.blocks, kpts), dense_bands(blocks, kpts)
    cnp_ref = 0.5 * (eps_ref[:, n_occ - 1] + eps_ref[:, n_occ])
    cnp_mod = 0.5 * (eps_mod[:, n_occ - 1] + eps_mod[:, n_occ])
    e_f = cnp_ref[2]  # the Dirac level at K: the Fermi level of the neutral bilayer
    rows = {}
    for ik, kname in enumerate(names):
        sel = np.abs(eps_ref[ik] - e_f) <= args.window
        d = eps_mod[ik][sel] - eps_ref[ik][sel]
        rows[kname] = {
            "n_bands_in_window": int(sel.sum()),
            "mae_meV": 1e3 * float(np.abs(d).mean()) if sel.any() else float("nan"),
            "max_meV": 1e3 * float(np.abs(d).max()) if sel.any() else float("nan"),
            "mae_after_mean_shift_meV": 1e3 * float(np.abs(d - d.mean()).mean()) if sel.any() else float("nan"),
            "cnp_ref_eV": float(cnp_ref[ik]),
            "cnp_model_eV": float(cnp_mod[ik]),
        }
    sel = np.abs(eps_ref - e_f) <= args.window
    d = (eps_mod - eps_ref)[sel]
    rows["all"] = {"n_bands_in_window": int(sel.sum()), "mae_meV": 1e3 * float(np.abs(d).mean()),
                   "max_meV": 1e3 * float(np.abs(d).max()),
                   "mae_after_mean_shift_meV": 1e3 * float(np.abs(d - d.mean()).mean()),
                   "cnp_ref_eV": float(e_f), "cnp_model_eV": float(cnp_mod[2])}
    # The sparse solver on the same model blocks, against the dense eigenvalues above (K: complex).
    from hedgenet.physics.sparse_bands import charge_neutrality_point

    e_sp, sp_res = charge_neutrality_point(blocks, atoms.numbers, float(cnp_mod[2]) + 0.3, K_MOIRE, args.n_bands)
    dense_k = eps_mod[2][sp_res.first_index:sp_res.first_index + args.n_bands]
    sparse_vs_dense = float(max(np.abs(sp_res.eigenvalues_eV - dense_k).max(), abs(e_sp - cnp_mod[2])))
    lo, hi = e_f - 3.0, e_f + 3.0  # Γ has few or no states within ±1 eV of the Dirac level
    return {
        "cell": args.validate, "atoms": len(atoms), "orbitals": int(blocks.n_orb.sum()),
        "block_cutoff_A": model.block_cutoff, "xtb_seconds": t_xtb, "model_seconds": t_model,
        "forces_mae_meV_per_A": 1e3 * float(np.abs(forces - ref.forces_eV_per_A).mean()),
        "forces_rms_ref_meV_per_A": 1e3 * float(np.sqrt((ref.forces_eV_per_A**2).mean())),
        "H_mae_meV": (1e3 * float(np.abs(blocks.H - ref.blocks.H).mean())
                      if np.array_equal(blocks.edge_index, ref.blocks.edge_index) else None),
        "truncation_eig_err_meV": 1e3 * eigen_error_of_truncation(ref.blocks, ref.orbital_energies_eV, (lo, hi)),
        "bands": rows,
        "sparse_vs_dense_max_eV": sparse_vs_dense,
        "sigma_guess_eV": float(cnp_mod[2]),  # model's Dirac (K) level: where the flat bands sit
        "torch_threads": torch.get_num_threads(),
    }


def stage_predict(args) -> dict:
    import numpy as np

    from hedgenet.calculators import blocks_from_prediction
    from hedgenet.models.io import load_model

    model = load_model(args.model)
    atoms = twisted_cell(args.big, args.lattice_from)
    builder = model.graph_builder()
    t0 = time.perf_counter()
    g = builder.from_atoms(atoms)
    t_graph = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = model(g.to(dtype=next(model.parameters()).dtype))  # energy, forces (autograd), H and S blocks
    t_model = time.perf_counter() - t0
    blocks = blocks_from_prediction(g, out, model.layout, atoms.numbers)
    forces = out["forces"].detach().numpy().astype(float)
    np.savez(Path(args.work) / "big_blocks.npz", edge_index=blocks.edge_index, cell_shift=blocks.cell_shift,
             H=blocks.H, S=blocks.S, n_orb=blocks.n_orb, numbers=atoms.numbers)
    return {
        "cell": args.big, "atoms": len(atoms), "orbitals": int(blocks.n_orb.sum()), "block_edges": blocks.n_edges,
        "model_dtype": str(next(model.parameters()).dtype),
        "graph_seconds": t_graph, "model_seconds": t_model,
        "energy_per_atom_eV": float(out["energy"][0]) / len(atoms),
        "max_force_eV_per_A": float(np.abs(forces).max()), "net_force_eV_per_A": float(np.abs(forces.sum(0)).max()),
    }


def stage_bands(args) -> dict:
    import numpy as np

    from hedgenet.orbitals.blocks import BlockSet
    from hedgenet.orbitals.layout import valence_electron_count
    from hedgenet.physics.sparse_bands import (
        charge_neutrality_point,
        eigenvalues_near,
        sparse_bloch_pair,
    )

    z = np.load(Path(args.work) / "big_blocks.npz")
    blocks = BlockSet(z["edge_index"], z["cell_shift"], z["H"], z["S"], z["n_orb"])
    sigma = json.loads((Path(args.work) / "validate.json").read_text())["sigma_guess_eV"]
    out = {"kpoints": {}}
    for kname in args.kpoints:
        k = (0.0, 0.0, 0.0) if kname == "Gamma" else K_MOIRE
        t0 = time.perf_counter()
        if kname == "Gamma":
            e_cnp, res = charge_neutrality_point(blocks, z["numbers"], sigma, k, n_bands=args.n_bands)
            sigma = e_cnp
        else:
            H, S = sparse_bloch_pair(blocks, k)
            t_asm = time.perf_counter() - t0
            res = eigenvalues_near(H, S, sigma, args.n_bands, kpoint_frac=k)
            res.timings_s["assembly"] = t_asm
            e_cnp = sigma  # Γ's level: K's bands are shown relative to it
        total = time.perf_counter() - t0
        out["kpoints"][kname] = {
            "E_cnp_eV": float(e_cnp), "sigma_eV": res.sigma_eV, "first_band_index": res.first_index,
            "n_occupied": valence_electron_count(z["numbers"]) // 2,
            "eigenvalues_minus_cnp_meV": [1e3 * float(x - e_cnp) for x in res.eigenvalues_eV],
            "seconds_total": total, "timings_s": res.timings_s, "lu_fill_nnz": res.fill_nnz,
        }
    H, _ = sparse_bloch_pair(blocks)
    out["matrix_nnz"] = int(H.nnz)
    return out


STAGES = {"validate": stage_validate, "predict": stage_predict, "bands": stage_bands}


def run_stage(name: str, args) -> dict:
    """Run one stage in a fresh interpreter with ``--threads`` threads; returns its JSON (+ peak RSS)."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, __file__, "--stage", name] + [a for a in sys.argv[1:] if a != "--stage"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    res = json.loads((Path(args.work) / f"{name}.json").read_text())
    res["stage_wall_seconds"] = time.perf_counter() - t0
    print(f"  stage {name}: {res['stage_wall_seconds']:.0f} s, peak RSS {res['peak_rss_GB']:.2f} GB", file=sys.stderr,
          flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt of hedgenet-train (task=joint)")
    p.add_argument("--lattice-from", required=True, help="labelled twisted dataset (.h5) whose a, d to use")
    p.add_argument("--big", default="1.12deg")
    p.add_argument("--validate", default="6.01deg")
    p.add_argument("--n-bands", type=int, default=20)
    p.add_argument("--kpoints", nargs="+", default=["Gamma"], choices=["Gamma", "K"])
    p.add_argument("--window", type=float, default=1.0, help="eV around E_CNP for the eigenvalue MAE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="outputs/moire_scale", help="folder for the stage results and blocks")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--xtb-ref", type=float, nargs=3, default=[364, 56.9, 2.80],
                   metavar=("ATOMS", "SECONDS", "EXPONENT"), help="docs/benchmarks.md reference-cost figures")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    args = p.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)

    if args.stage:  # child process: one stage
        import torch

        torch.set_num_threads(args.threads)
        res = STAGES[args.stage](args)
        res["peak_rss_GB"] = peak_rss_gb()
        (Path(args.work) / f"{args.stage}.json").write_text(json.dumps(res, indent=1))
        return

    res = {s: run_stage(s, args) for s in args.stages}
    res = {s: json.loads((Path(args.work) / f"{s}.json").read_text()) | res.get(s, {}) for s in STAGES
           if (Path(args.work) / f"{s}.json").exists()}
    v, pr, b = res.get("validate"), res.get("predict"), res.get("bands")
    if v:
        print_table(
            ["k", "bands in E_F ± %.1f eV" % args.window, "MAE (meV)", "max (meV)", "MAE after mean shift (meV)",
             "E_CNP(k) xTB (eV)", "E_CNP(k) model (eV)"],
            [[k, r["n_bands_in_window"], r["mae_meV"], r["max_meV"], r["mae_after_mean_shift_meV"], r["cnp_ref_eV"],
              r["cnp_model_eV"]] for k, r in v["bands"].items()],
            title=f"transfer: {v['cell']} ({v['atoms']} atoms, not in the training set), model vs xTB, "
                  f"blocks within {v['block_cutoff_A']} Å; forces MAE {v['forces_mae_meV_per_A']:.1f} meV/Å "
                  f"(xTB force RMS {v['forces_rms_ref_meV_per_A']:.1f}); block truncation moves xTB's Γ bands "
                  f"within E_F ± 3 eV by ≤ {v['truncation_eig_err_meV']:.2f} meV; sparse vs dense solve of the "
                  f"model's K bands: {v['sparse_vs_dense_max_eV']:.1e} eV",
        )
    if pr:
        n_ref, t_ref, p_exp = args.xtb_ref
        rows = [["graph construction (s)", pr["graph_seconds"]],
                ["model: E, F, H, S blocks (s)", pr["model_seconds"]],
                ["peak RSS, predict stage (GB)", pr["peak_rss_GB"]]]
        if b:
            for k, r in b["kpoints"].items():
                t = r["timings_s"]
                rows += [[f"bands at {k}: total incl. E_CNP search (s)", r["seconds_total"]],
                         [f"  assembly / S check / LU / Lanczos (s), {t.get('n_sigma', 1)} σ",
                          " / ".join(f"{t.get(x, 0):.1f}" for x in ("assembly", "overlap_check", "factorisation",
                                                                      "lanczos"))],
                         ["  LU fill (nonzeros) vs H(k) nonzeros", f"{r['lu_fill_nnz']:.3g} vs {b['matrix_nnz']:.3g}"]]
            rows.append(["peak RSS, bands stage (GB)", b["peak_rss_GB"]])
        rows.append([f"xTB extrapolated from {int(n_ref)} atoms ({t_ref} s, p = {p_exp}) (s)",
                     t_ref * (pr["atoms"] / n_ref) ** p_exp])
        if v:
            rows.append([f"xTB extrapolated from this run's {v['atoms']}-atom call ({v['xtb_seconds']:.0f} s, "
                         f"{args.threads} thread(s), p = {p_exp}) (s)",
                         v["xtb_seconds"] * (pr["atoms"] / v["atoms"]) ** p_exp])
            rows.append(["xTB dense matrices (GB, one N_orb² float64 matrix)", 8 * pr["orbitals"] ** 2 / 1e9])
        print_table(["quantity", "value"], rows,
                    title=f"{pr['cell']}: {pr['atoms']} atoms, {pr['orbitals']} orbitals, {pr['block_edges']} block "
                          f"edges, {args.threads} thread(s)")
        if b:
            for k, r in b["kpoints"].items():
                print(f"\n{k}: E_CNP{'' if k == 'Gamma' else ' (σ: the Γ level or the guess)'} = {r['E_cnp_eV']:.6f} eV; "
                      f"the {len(r['eigenvalues_minus_cnp_meV'])} bands nearest "
                      f"(meV from E_CNP; first band index {r['first_band_index']}, occupied {r['n_occupied']}):\n  "
                      + " ".join(f"{x:.1f}" for x in r["eigenvalues_minus_cnp_meV"]))
    (Path(args.work) / "summary.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
