"""Active against random picks: how many reference calls does a target accuracy cost?

Runs ``hedgenet-active`` once per (strategy, seed) on one candidate pool — a dataset labelled earlier by
``hedgenet-label`` (e.g. the learning-curve benchmark's 192-cell pool), given as ``active.labels_from``, so
every pick is copied instead of recomputed and still counts as one reference call — starting from the same
seed set (a subset of that pool: its cells are never offered again), with committees trained alike in every
round. Then, per round, the committee (members' mean) is measured on held-out data:

- test force MAE (meV/Å) and H MAE (meV): the members' mean test errors of the round's training run;
- phonon MAE against the reference on Γ–M–K–Γ (THz) and the Γ interlayer shear and breathing modes (THz):
  ``hedgenet-phonons calculator=model model_path=<round committee> compare_with=<reference phonons run>``.

    OMP_NUM_THREADS=1 python benchmarks/active_learning.py --pool <pool.h5> --seed-data <subset of it>.h5 \\
        --test <held-out>.h5 --reference-phonons <hedgenet-phonons run dir> --root outputs/active_learning \\
        --strategies uncertainty random --seeds 0 1 2 --batch 12 --max-labels 48

``--fermi-velocity KEY=VALUE ...`` (overrides of ``hedgenet-fermi-velocity``, e.g. ``fermi_velocity.supercell=[6,6]
'fermi_velocity.temperatures_K=[300.0]' sampler.n_samples=16``) adds v_F(T): one run with the reference under
those overrides (``<root>/runs/fermi_velocity_reference``, once), then one with each round's model; a round is
within 1σ when, at every temperature, its all-orders v₀(T) (its v₀(T)/static times its static v₀) differs from the
reference's by at most the two error bars combined, and the summary gives the fewest calls at which every seed's round is
(a strict test: a faithful model's seeds are each within 1σ only two times in three) and, per round, the seeds' mean
v₀(T) with its standard error over seeds against the reference, with the fewest calls from which that mean stays
within 1σ.

``--strategies oracle`` ranks by the round's actual errors (every candidate is labelled in the pool): the bound
on what any per-candidate uncertainty could save on this pool; its rounds also give how well the model's own
spreads ranked the pool (Spearman against the actual errors) and how many of the oracle's picks the model's own
ranking would have made.

Another material's pool (labelled with ``material=...``) needs the same overrides again as ``--material``, e.g.
the 13.17° twisted cell: ``--material material=twisted_bilayer_graphene material.params.m=2 material.params.n=3
--phonon-supercell 1 1`` (the phonon runs take the pool's block cutoff).

Writes ``<root>/active_learning.json`` (settings and one row per strategy × seed × round),
``active_learning.md`` (the rows and, for phonons, the Γ interlayer modes (mean |model − reference| of shear and
breathing), test forces and test H, the calls each strategy needs to bring
the seed-mean to random picks' seed-mean at the whole budget — ``--target-phonon-mae`` instead for phonons; the
ratio of the budget to an active strategy's calls is how many times fewer calls it needs — capped at budget ÷ batch
by construction; so also, per active strategy, the random calls that give its error at its whole budget, from
random's learning curve in labelled cells, extrapolated by its power law where active did better than random ever
did; all printed) and ``active_learning.png`` (phonon and force MAE against reference calls,
mean and range over seeds). Resumable: every hedgenet-active and hedgenet-phonons run lives under
``<root>/runs`` and a finished one is reused; rerun the same command to continue.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from hedgenet.pipeline.stages import run_logged

sys.path.insert(0, str(Path(__file__).parent))
from _common import portable_json, print_table  # noqa: E402
from interlayer_ablation import cli, gamma_modes  # noqa: E402

TRAIN = ["++train.trainer.precision=32-true", "++train.data.batch_size=1", "++train.train.scheduler.patience=4",
         "++train.train.force_constants.every_n_steps=2", "++train.train.force_constants.interlayer_every_n_steps=1"]
"""The main job's train recipe (conf/pipeline.yaml ``overrides.train``) besides the model and epochs."""


def pool_header(pool: Path) -> dict:
    from hedgenet.data.store import DatasetStore

    return DatasetStore(pool).header()


def block_cutoff(pool: Path) -> str:
    """The pool's block cutoff as an override (Å): every phonon run of a round keeps the labelling cell's blocks."""
    return f"reference.block_cutoff={pool_header(pool)['solver_settings']['block_cutoff_A']}"


def pool_overrides(pool: Path) -> list[str]:
    """hedgenet-active overrides that rebuild the candidates of ``pool`` (its recipe and seed, from its header),
    so that the pool's fingerprint matches and its labels can be copied. The material is not among them: a pool
    of another material than the default needs ``--material`` (a mismatch is refused by the fingerprint)."""
    header = pool_header(pool)
    cfg = yaml.safe_load(header["config"])
    d = cfg["dataset"]

    def v(x) -> str:
        return json.dumps(x).replace(" ", "")

    out = [f"seed={cfg['seed']}", f"pool.supercell={v(d['supercell'])}",
           f"pool.rattle.amplitudes_A={v(d['rattle']['amplitudes_A'])}",
           f"pool.rattle.n_per_amplitude={d['rattle']['n_per_amplitude']}",
           f"pool.thermal.temperatures_K={v(d['thermal']['temperatures_K'])}",
           f"pool.thermal.n_per_temperature={d['thermal']['n_per_temperature']}",
           f"pool.thermal.quantum={str(d['thermal']['quantum']).lower()}",
           f"pool.thermal.cutoff_frequency_THz={d['thermal']['cutoff_frequency_THz']}",
           f"pool.thermal.fc_displacement_A={d['thermal']['fc_displacement_A']}",
           f"pool.rigid.shifts_A={v(d['rigid']['shifts_A'])}", f"pool.strain.strains={v(d['strain']['strains'])}",
           f"pool.strain.rattle_A={d['strain']['rattle_A']}", block_cutoff(pool)]
    return out


def arm(args, entry: str) -> tuple[str, str, str]:
    """An entry of ``--strategies`` (``strategy`` or ``strategy:score``) as (strategy, score, run-name stem); the
    score defaults to ``--score``, and runs with the score ``both`` keep the plain strategy name."""
    strategy, _, score = entry.partition(":")
    score = score or args.score
    return strategy, score, strategy if score == "both" else f"{strategy}_{score}"


def run_active(args, entry: str, seed: int) -> Path:
    strategy, score, stem = arm(args, entry)
    name = f"{stem}_seed{seed}"
    run_dir = args.root / "runs" / name
    if (run_dir / "summary.json").exists():
        return run_dir
    overrides = [*args.material, f"seed_data=[{args.seed_data}]", f"test_paths=[{args.test}]", *pool_overrides(args.pool),
                 f"active.labels_from={args.pool}", f"pool.name=pool_{name}", f"active.strategy={strategy}",
                 f"active.seed={seed}", f"active.batch_size={args.batch}", f"active.max_labels={args.max_labels}",
                 f"active.max_rounds={math.ceil(args.max_labels / args.batch)}",
                 f"active.committee_size={args.committee_size}", f"active.score={score}",
                 f"train.train.max_epochs={args.epochs}", f"++train.seed={seed}", *TRAIN, "progress=false",
                 f"hydra.run.dir={run_dir}"]
    cmd = [sys.executable, "-m", "hedgenet.cli.active", *overrides]
    t0 = time.perf_counter()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    status = run_logged(cmd, run_dir.parent / f"{name}.log",
                        env={"HEDGENET_ROOT": str(args.root), "WANDB_MODE": "offline"})
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {status}); log {run_dir.parent / f'{name}.log'}")
    print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return run_dir


def round_rows(args, entry: str, seed: int, run_dir: Path) -> list[dict]:
    stem = arm(args, entry)[2]
    rows = []
    ref = gamma_modes(args.reference_phonons)
    for r in (json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines() if line.strip()):
        train_dir = run_dir / "rounds" / str(r["round"]) / "train"
        committee = train_dir / "committee.json"
        if not committee.exists():  # active.committee_size=1: one model per round
            committee = train_dir / "model.pt"
        ph_dir = args.root / "runs" / f"phonons_{stem}_seed{seed}_r{r['round']}"
        s = cli("phonons", args.root, ph_dir, *args.material, "calculator=model", f"model_path={committee}",
                f"phonons.supercell=[{args.phonon_supercell[0]},{args.phonon_supercell[1]}]", block_cutoff(args.pool),
                f"compare_with={args.reference_phonons}")
        g = gamma_modes(ph_dir)
        vf = fermi_velocity_row(args, args.root / "runs" / f"fermi_velocity_{stem}_seed{seed}_r{r['round']}",
                                "calculator=model", f"model_path={committee}")
        rows.append({"strategy": entry, "seed": seed, "round": r["round"], "calls": r["n_picked_total"],
                     "cells": r["n_labelled"], "test_forces_mae_meV_A": r.get("test_forces_mae_meV_A"),
                     "test_H_mae_meV": r.get("test_H_mae_meV"), "phonon_mae_THz": s["frequency_mae_vs_compare_THz"],
                     "shear_THz": g["interlayer shear"], "breathing_THz": g["layer breathing"],
                     "gamma_interlayer_mae_THz": float(np.mean([abs(g[m] - ref[m]) for m in GAMMA_MODES])),
                     "pool_force_spread_mean_meV_A": r.get("pool_force_spread_mean_meV_A"),
                     "train_s": r.get("train_s"), "picked_kinds": r.get("picked_kinds"), **vf,
                     **ranking_diagnostics(run_dir / "rounds" / str(r["round"]) / "picked.json", r)})
    return rows


def ranking_diagnostics(picks_file: Path, round_row: dict) -> dict:
    """For a round that ranked by actual errors (``oracle``; empty otherwise): how well the round's model's own
    spreads ranked the pool's actual errors (Spearman, forces and H, as hedgenet-active recorded them) and
    ``uncertainty_overlap``: how many of its picks the model's own ranking (``active.score``, the same batch size)
    would have picked too."""
    from hedgenet.training.active import pick, uncertainty_score

    if not picks_file.exists():
        return {}
    record = json.loads(picks_file.read_text())
    if "force_error_eV_A" not in record:
        return {}
    spreads = {k: np.asarray(record[k]) for k in ("force_spread_eV_A", "H_spread_eV", "force_rms_eV_A") if k in record}
    n = len(record["picked"])
    own = pick(record["candidates"], uncertainty_score(spreads, record["score"]), n, "uncertainty", 0)
    return {"pool_spearman_forces": round_row.get("pool_spearman_forces"),
            "pool_spearman_H": round_row.get("pool_spearman_H"),
            "uncertainty_overlap": len(set(own) & set(record["picked"])), "batch": n}


GAMMA_MODES = ("interlayer shear", "layer breathing")
"""The Γ interlayer modes whose mean |model − reference| (THz) is a measure of its own."""


VF_ORDER = "all"
"""The order whose v₀(T)/static the v_F measure compares (``--fermi-velocity``)."""


def fermi_velocity_values(summary: dict) -> dict[str, tuple[float, float, float]]:
    """{temperature: (v₀(T) in 10⁵ m/s, its error bar, v₀(T)/static)} of ``VF_ORDER`` in a hedgenet-fermi-velocity
    summary: the ratio to the run's own static lattice times its static v₀, so that a model whose static cone is
    off is off in v₀(T) too (the ratio alone would hide it)."""
    by_t = summary["by_temperature"].get(VF_ORDER)
    if by_t is None:
        raise SystemExit(f"the v_F runs have no order {VF_ORDER!r} (fermi_velocity.orders must include it)")
    static = float(summary["static"]["v0_1e5_m_s"])
    return {t: (float(fit["ratio_to_static"]) * static, float(fit["ratio_err"]) * static, float(fit["ratio_to_static"]))
            for t, fit in by_t.items()}


def fermi_velocity_row(args, run_dir: Path, *overrides: str) -> dict:
    """The v_F measure of one model (empty without ``--fermi-velocity``): its all-orders v₀(T) (10⁵ m/s) and
    v₀(T)/static per temperature, and the largest |model − reference| of v₀(T) over the two error bars combined
    (``vF_z``; ≤ 1: within 1σ)."""
    if not args.fermi_velocity:
        return {}
    common = [*args.material, block_cutoff(args.pool), "progress=false", *args.fermi_velocity]
    reference = fermi_velocity_values(cli("fermi_velocity", args.root, args.root / "runs" / "fermi_velocity_reference",
                                          *common, "calculator=reference"))
    try:
        model = fermi_velocity_values(cli("fermi_velocity", args.root, run_dir, *common, *overrides))
    except SystemExit as err:  # e.g. refused for imaginary modes: that round's model is not within 1σ
        reason = str(err).strip().splitlines()[-1]
        print(f"  {run_dir.name} refused: {reason}", flush=True)
        return {"vF_v0_1e5_m_s": {}, "vF_v0_err": {}, "vF_ratio": {}, "vF_reference": reference, "vF_z": math.inf,
                "vF_refused": reason}
    z = max(abs(model[t][0] - reference[t][0]) / math.hypot(model[t][1], reference[t][1]) for t in reference)
    return {"vF_v0_1e5_m_s": {t: model[t][0] for t in model}, "vF_v0_err": {t: model[t][1] for t in model},
            "vF_ratio": {t: model[t][2] for t in model}, "vF_reference": reference, "vF_z": z}


def calls_within_1sigma(rows: list[dict]) -> float | None:
    """The fewest reference calls at which every seed's v_F(T) is within 1σ of the reference's (None: never)."""
    by_calls: dict[int, list[float]] = {}
    for r in rows:
        by_calls.setdefault(r["calls"], []).append(r["vF_z"])
    return next((c for c in sorted(by_calls) if max(by_calls[c]) <= 1.0), None)


def seed_mean_vf(rows: list[dict]) -> dict[int, dict]:
    """Per number of calls, the seeds' mean all-orders v₀(T) (10⁵ m/s) against the reference's: {calls: {"v0",
    "err", "z"}} with err the standard error over seeds (the models' own Monte Carlo error where one seed) and z the
    largest |mean − reference| over err and the reference's error bar combined, over temperatures; a refused model
    makes its round's z infinite."""
    out = {}
    for calls in sorted({r["calls"] for r in rows}):
        mine = [r for r in rows if r["calls"] == calls]
        if any(not r["vF_v0_1e5_m_s"] for r in mine):
            out[calls] = {"v0": {}, "err": {}, "z": math.inf}
            continue
        reference = mine[0]["vF_reference"]
        v0, err, z = {}, {}, 0.0
        for t, (ref_v0, ref_err, _) in reference.items():
            values = [r["vF_v0_1e5_m_s"][t] for r in mine]
            v0[t] = float(np.mean(values))
            err[t] = (float(np.std(values, ddof=1)) / math.sqrt(len(values)) if len(values) > 1
                      else mine[0]["vF_v0_err"][t])
            z = max(z, abs(v0[t] - ref_v0) / math.hypot(err[t], ref_err))
        out[calls] = {"v0": v0, "err": err, "z": z}
    return out


def calls_staying_within_1sigma(per_calls: dict[int, dict]) -> float | None:
    """The fewest calls from which the seed-mean v_F(T) stays within 1σ of the reference's in every later round."""
    calls = sorted(per_calls)
    return next((c for i, c in enumerate(calls) if all(per_calls[k]["z"] <= 1.0 for k in calls[i:])), None)


def seed_means(rows: list[dict], key: str, by: str = "calls") -> dict[int, float]:
    """{rows' ``by`` value (calls or labelled cells), ascending: the seeds' mean of ``key``}."""
    groups: dict[int, list[float]] = {}
    for r in rows:
        groups.setdefault(r[by], []).append(r[key])
    return {x: float(np.mean(v)) for x, v in sorted(groups.items())}


def calls_to_reach(rows: list[dict], key: str, target: float) -> float | None:
    """The fewest reference calls at which the seed-mean of ``key`` is ≤ ``target`` (None: never)."""
    return next((calls for calls, mean in seed_means(rows, key).items() if mean <= target), None)


MEASURES = {"phonon_mae_THz": "phonon MAE (THz)",
            "gamma_interlayer_mae_THz": "Γ shear and breathing, mean |model − reference| (THz)",
            "test_forces_mae_meV_A": "test force MAE (meV/Å)", "test_H_mae_meV": "test H MAE (meV)"}
"""The measures whose calls-to-reach the summary gives: row key → label."""


def reach_targets(rows: list[dict], phonon_target: float | None) -> dict[str, float]:
    """Per measure, the target of "calls to reach": the random strategy's seed-mean at its last round (its
    whole budget), so that an active strategy reaching it at C calls needs (random's calls) / C fewer; the
    phonon target may be given instead. Measures without a random run (or without values) are left out."""
    random_rows = [r for r in rows if r["strategy"] == "random"]
    last = max((r["calls"] for r in random_rows), default=None)
    targets = {}
    for key in MEASURES:
        values = [r[key] for r in random_rows if r["calls"] == last and r[key] is not None]
        if key == "phonon_mae_THz" and phonon_target is not None:
            targets[key] = phonon_target
        elif values:
            targets[key] = float(np.mean(values))
    return targets


EXTRAPOLATE_AT_MOST = 2.0
"""random_equivalent_calls extrapolates random's power law to at most this many times its largest labelled set;
beyond, it gives that as a lower bound."""


def random_equivalent_calls(rows: list[dict], key: str, strategy: str) -> dict | None:
    """How many random picks give the seed-mean ``key`` that ``strategy`` reaches with its whole budget.

    Random's seed-mean learning curve is taken as a function of the labelled cells (seed set + calls): between
    two of its rounds log–log interpolation; below its last error (the active strategy did better than random at
    its whole budget) the power law fitted to its rounds after the seed set, marked ``extrapolated`` — only where
    those rounds' errors fall steadily, and to at most ``EXTRAPOLATE_AT_MOST`` times random's largest set (then a
    lower bound, said in ``note``). Returns ``{"calls", "random_calls", "ratio", "extrapolated", "exponent",
    "note"}`` (ratio = random_calls / calls; the exponent is the fitted power of labelled cells; random_calls and
    ratio None, with the reason in note, where nothing can be said), or None without both curves."""
    def means(name) -> tuple[dict[int, float], int]:
        """{labelled cells: seed-mean of key} of one strategy, and its seed set's size."""
        mine = [r for r in rows if r["strategy"] == name and r[key] is not None]
        return seed_means(mine, key, by="cells"), min((r["cells"] - r["calls"] for r in mine), default=0)

    random_curve, random_seed = means("random")
    active, seed = means(strategy)
    if len(random_curve) < 2 or not active:
        return None
    cells = max(active)
    target = active[cells]
    n = np.array(list(random_curve), dtype=float)
    e = np.array(list(random_curve.values()))
    picked = n > random_seed  # the fit leaves out the seed-only round, common to every strategy
    fit = picked if picked.sum() >= 2 else np.ones_like(picked)
    exponent, intercept = np.polyfit(np.log(n[fit]), np.log(e[fit]), 1)
    found = None
    for i in range(len(n) - 1):
        if e[i] != e[i + 1] and (e[i] - target) * (e[i + 1] - target) <= 0:
            t = math.log(target / e[i]) / math.log(e[i + 1] / e[i])
            found = math.exp(math.log(n[i]) + t * math.log(n[i + 1] / n[i]))
            break
    calls = cells - seed
    out = {"calls": calls, "random_calls": None, "ratio": None, "extrapolated": found is None,
           "exponent": float(exponent), "note": None}
    if found is None:
        if target > e.max():
            found = float(n.min())  # worse than random ever was: worth no more than random's first round
        elif exponent >= 0 or np.any(np.diff(e[fit]) >= 0):
            out["note"] = "random's error does not fall steadily with data: no power law to extrapolate"
            return out
        else:
            found = math.exp((math.log(target) - intercept) / exponent)
            if found > EXTRAPOLATE_AT_MOST * n.max():
                found = EXTRAPOLATE_AT_MOST * n.max()
                out["note"] = f"at least: beyond {EXTRAPOLATE_AT_MOST:g}× random's largest set"
    out["random_calls"] = max(found - seed, 0.0)
    out["ratio"] = out["random_calls"] / calls if calls else math.inf
    return out


def plot(rows: list[dict], path: Path, strategies) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in ((axes[0], "phonon_mae_THz", "phonon MAE (THz)"),
                           (axes[1], "test_forces_mae_meV_A", "test force MAE (meV/Å)")):
        for strategy in strategies:
            mine = [r for r in rows if r["strategy"] == strategy and r[key] is not None]
            calls = sorted({r["calls"] for r in mine})
            vals = [[r[key] for r in mine if r["calls"] == c] for c in calls]
            ax.plot(calls, [np.mean(v) for v in vals], "o-", label=strategy)
            ax.fill_between(calls, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
        ax.set_xlabel("reference calls (picked cells)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pool", type=Path, required=True, help="the labelled candidate pool (hedgenet-label dataset)")
    p.add_argument("--seed-data", type=Path, required=True, help="the seed set: a subset of the pool's samples")
    p.add_argument("--test", type=Path, required=True, help="held-out labelled cells")
    p.add_argument("--reference-phonons", type=Path, required=True, help="a hedgenet-phonons run of the reference")
    p.add_argument("--root", type=Path, default=Path("outputs/active_learning"))
    p.add_argument("--strategies", nargs="+", default=["uncertainty", "random"],
                   help="active.strategy values, each optionally with its own score: e.g. uncertainty:phonons")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--max-labels", type=int, default=48)
    p.add_argument("--committee-size", type=int, default=2)
    p.add_argument("--score", default="both", help="active.score of the strategies that name none")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--phonon-supercell", type=int, nargs=2, default=[7, 7])
    p.add_argument("--material", nargs="*", default=[], metavar="KEY=VALUE",
                   help="the pool's material, as overrides of hedgenet-active and hedgenet-phonons (default: the AB "
                        "bilayer), e.g. material=twisted_bilayer_graphene material.params.m=2 material.params.n=3")
    p.add_argument("--fermi-velocity", nargs="*", default=[], metavar="KEY=VALUE",
                   help="measure v_F(T) too: hedgenet-fermi-velocity overrides of the reference run and every "
                        "round's model run, e.g. fermi_velocity.supercell=[6,6] 'fermi_velocity.temperatures_K=[300.0]' "
                        "sampler.n_samples=16")
    p.add_argument("--target-phonon-mae", type=float, default=None,
                   help="THz; default: the random strategy's seed-mean at its last round")
    args = p.parse_args()
    for name in ("pool", "seed_data", "test", "reference_phonons", "root"):
        setattr(args, name, getattr(args, name).resolve())
    print("reproduce: OMP_NUM_THREADS=1 python benchmarks/active_learning.py "
          + " ".join(shlex.quote(a) for a in sys.argv[1:]), flush=True)
    rows = []
    for seed in args.seeds:
        for strategy in args.strategies:
            print(f"{strategy}, seed {seed}", flush=True)
            rows += round_rows(args, strategy, seed, run_active(args, strategy, seed))
    targets = reach_targets(rows, args.target_phonon_mae)
    reach = {key: {s: calls_to_reach([r for r in rows if r["strategy"] == s and r[key] is not None], key, target)
                   for s in args.strategies} for key, target in targets.items()}
    table = [[r["strategy"], r["seed"], r["calls"], r["cells"], f"{r['test_forces_mae_meV_A']:.1f}",
              "–" if r["test_H_mae_meV"] is None else f"{r['test_H_mae_meV']:.2f}", f"{r['phonon_mae_THz']:.3f}",
              f"{r['shear_THz']:.3f}", f"{r['breathing_THz']:.3f}",
              "–" if r["pool_force_spread_mean_meV_A"] is None else f"{r['pool_force_spread_mean_meV_A']:.1f}",
              " ".join(r["picked_kinds"] or [])[:40]] for r in rows]
    headers = ["strategy", "seed", "calls", "cells", "test F MAE (meV/Å)", "test H MAE (meV)", "phonon MAE (THz)",
               "Γ shear (THz)", "Γ breathing (THz)", "pool spread (meV/Å)", "picked kinds"]
    if args.fermi_velocity:
        headers[-1:-1] = [f"v₀(T) (10⁵ m/s), {VF_ORDER} orders", "v₀(T)/static", "|Δv₀(T)| / σ vs reference"]
        for line, r in zip(table, rows):
            line[-1:-1] = [" ".join(f"{t} K {v:.3f} ± {r['vF_v0_err'][t]:.3f}" for t, v in r["vF_v0_1e5_m_s"].items())
                           or r.get("vF_refused", "")[:40],
                           " ".join(f"{v:.3f}" for v in r["vF_ratio"].values()), f"{r['vF_z']:.2f}"]
    text = print_table(headers, table, title="active learning: per round")
    for key, target in targets.items():
        line = (f"calls to reach a seed-mean {MEASURES[key]} ≤ {target:.3g}: "
                + ", ".join(f"{s} {reach[key][s] if reach[key][s] is not None else 'not reached'}"
                            for s in args.strategies))
        print(line)
        text += ("\n" if key == next(iter(targets)) else "") + line + "\n"
    equivalent = {key: {s: random_equivalent_calls(rows, key, s) for s in args.strategies if s != "random"}
                  for key in MEASURES}
    for key, per_strategy in equivalent.items():
        for s, q in per_strategy.items():
            if q is None:
                continue
            if q["random_calls"] is None:
                line = f"{MEASURES[key]}: {s} at {q['calls']} calls: {q['note']}"
            else:
                line = (f"{MEASURES[key]}: {s} at {q['calls']} calls = random at "
                        + ("≥ " if q["note"] else "") + f"{q['random_calls']:.0f} calls ({q['ratio']:.2f}× fewer"
                        + (f"; extrapolated by random's power law, error ∝ cells^{q['exponent']:.2f})"
                           if q["extrapolated"] else ")"))
            print(line)
            text += line + "\n"
    for s in args.strategies:
        ranked = [r for r in rows if r["strategy"] == s and "uncertainty_overlap" in r]
        if ranked:
            line = (f"{s}: per round (seed means), Spearman of the model's own spreads against the pool's actual "
                    "errors (forces, H) and how many of the batch its own ranking would have picked: "
                    + ", ".join(f"{c} calls: {np.mean([r['pool_spearman_forces'] for r in ranked if r['calls'] == c]):.2f}, "
                                f"{np.mean([r['pool_spearman_H'] for r in ranked if r['calls'] == c]):.2f}, "
                                f"{np.mean([r['uncertainty_overlap'] for r in ranked if r['calls'] == c]):.1f} of "
                                f"{ranked[0]['batch']}" for c in sorted({r['calls'] for r in ranked})))
            print(line)
            text += line + "\n"
    within, mean_vf, staying = {}, {}, {}
    if args.fermi_velocity:
        within = {s: calls_within_1sigma([r for r in rows if r["strategy"] == s]) for s in args.strategies}
        mean_vf = {s: seed_mean_vf([r for r in rows if r["strategy"] == s]) for s in args.strategies}
        staying = {s: calls_staying_within_1sigma(mean_vf[s]) for s in args.strategies}
        reference = rows[0]["vF_reference"]
        line = (f"calls until every seed's v₀(T) ({VF_ORDER} orders) is within 1σ of the reference's ("
                + ", ".join(f"{t} K {v:.3f} ± {e:.3f} × 10⁵ m/s, {q:.3f} of static" for t, (v, e, q) in reference.items())
                + "): "
                + ", ".join(f"{s} {within[s] if within[s] is not None else 'never'}" for s in args.strategies))
        print(line)
        text += line + "\n"
        for s in args.strategies:
            line = (f"{s}: seed-mean v₀(T) per calls (z against the reference, standard error over seeds): "
                    + ", ".join(f"{c}: " + " ".join(f"{v:.3f} ± {m['err'][t]:.3f}" for t, v in m["v0"].items())
                                + f" (z {m['z']:.2f})" for c, m in mean_vf[s].items())
                    + f"; within 1σ from {staying[s] if staying[s] is not None else 'never'} calls on")
            print(line)
            text += line + "\n"
    args.root.mkdir(parents=True, exist_ok=True)
    (args.root / "active_learning.md").write_text(text)
    (args.root / "active_learning.json").write_text(portable_json(
        {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
         "targets": targets, "calls_to_reach": reach, "random_equivalent_calls": equivalent,
         "calls_within_1sigma_vF": within, "seed_mean_vF": mean_vf, "calls_staying_within_1sigma_vF_mean": staying,
         "rows": rows}, args.root))
    plot(rows, args.root / "active_learning.png", args.strategies)


if __name__ == "__main__":
    main()
