"""The comparison of trained models on one material: per-run values, mean ± std over seeds per arm
(model × relation set), phonons of each model against the reference's finite differences, v_F(T) errors.

Every number comes from a run's own files (``metrics.json``: errors in meV, meV/Å, meV/atom, times in s)
or from :mod:`hedgenet.physics.comparison` (phonon frequencies in THz along Γ–M–K–Γ of each ``model.pt`` and
of the reference, by the same phonopy finite differences), which the caller passes in: this module computes
no physics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from hedgenet.report.runs import CompareError, TrainRun

# (key, header with unit); which split's metric is read is decided per table (test if every run has one)
COLUMNS = (
    ("forces_mae", "force MAE (meV/Å)"),
    ("energy_mae", "energy MAE (meV/atom)"),
    ("H_onsite_mae", "H on-site MAE (meV)"),
    ("H_intra_mae", "H intra MAE (meV)"),
    ("H_inter_mae", "H inter MAE (meV)"),
    ("bands_mae", "eigenvalue MAE (meV)"),
    ("phonon_mae_THz", "phonon MAE (THz)"),
    ("vf_mae_1e5_m_s", "v_F(T) MAE (10⁵ m/s)"),
    ("n_parameters", "parameters"),
    ("train_time_s", "training time (s)"),
    ("inference_ms", "inference (ms/structure)"),
)
SPLIT_METRICS = ("forces_mae", "energy_mae", "H_onsite_mae", "H_intra_mae", "H_inter_mae", "bands_mae")
MARGIN_KEYS = ("phonon_mae_THz", "forces_mae", "bands_mae", "H_intra_mae", "H_inter_mae")


@dataclass
class Arm:
    """One model × relation set on one material: its runs (one per seed) and per-run values."""

    name: str
    runs: list[TrainRun]
    values: list[dict] = field(default_factory=list)          # per run: column key -> float | None
    phonons: list[np.ndarray | None] = field(default_factory=list)   # per run: frequencies (n_q, n_modes) THz
    vf_curves: list[dict | None] = field(default_factory=list)       # per run: {T: v0 (10⁵ m/s)}

    def stats(self, key: str) -> tuple[float, float | None, int] | None:
        """(mean, sample std (ddof 1) or None for one seed, number of seeds) of ``key``; None if no run has it."""
        xs = [v[key] for v in self.values if v.get(key) is not None]
        if not xs:
            return None
        return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else None), len(xs)


@dataclass
class MaterialTable:
    material: str
    split: str                      # "test" (held-out set) or "val"
    n_eval: int                     # structures in that set
    arms: list[Arm]
    phonon_note: str
    reference_phonons: dict | None = None      # distances, frequencies_THz, ticks, labels
    vf_reference: dict | None = None           # {T: v0 (10⁵ m/s)}
    vf_order: str | None = None
    versus: str | None = None                  # the arm margins are measured against (HedgeNet)
    margins: list[dict] = field(default_factory=list)


def split_of(runs: list[TrainRun]) -> tuple[str, int]:
    """The held-out test set when every run evaluated one, else the validation set; and its size."""
    if all(int(r.metrics.get("n_test", 0)) > 0 for r in runs):
        return "test", int(runs[0].metrics["n_test"])
    return "val", int(runs[0].metrics.get("n_val", 0))


def run_values(run: TrainRun, split: str) -> dict:
    """The table's values of one run read from its metrics.json (None where the run has none)."""
    m = run.metrics
    out = {k: (float(m[f"{split}/{k}"]) if f"{split}/{k}" in m else None) for k in SPLIT_METRICS}
    out["n_parameters"] = float(m["n_parameters"]) if "n_parameters" in m else None
    out["train_time_s"] = float(m["train_time_s"]) if "train_time_s" in m else None
    t = m.get("inference_time_s_per_structure")
    out["inference_ms"] = 1e3 * float(t) if t is not None else None
    out["phonon_mae_THz"] = None
    out["vf_mae_1e5_m_s"] = None
    return out


# ----------------------------------------------------------------------------------------------- v_F(T)
@dataclass
class FermiVelocityRun:
    dir: Path
    config: dict
    summary: dict


def find_fermi_velocity_runs(dirs) -> list[FermiVelocityRun]:
    """``hedgenet-fermi-velocity`` run directories below each of ``dirs``."""
    out = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise CompareError(f"--fermi-velocity {d}: not a directory. Fix: pass a folder of hedgenet-fermi-velocity runs.")
        for cfg_file in sorted(d.rglob("resolved_config.yaml")):
            config = yaml.safe_load(cfg_file.read_text()) or {}
            if config.get("task_name") != "fermi_velocity":
                raise CompareError(f"--fermi-velocity {d}: {cfg_file.parent} is not a hedgenet-fermi-velocity run. "
                                   "Fix: pass only folders of hedgenet-fermi-velocity runs.")
            summary = cfg_file.parent / "summary.json"
            if not summary.exists():
                raise CompareError(f"v_F run {cfg_file.parent} did not finish (no summary.json). Fix: rerun or remove it.")
            out.append(FermiVelocityRun(cfg_file.parent, config, json.loads(summary.read_text())))
    return out


def _vf_settings(r: FermiVelocityRun) -> dict:
    return {"fermi_velocity": r.config.get("fermi_velocity"), "sampler": r.config.get("sampler"),
            "material": r.config.get("material")}


def attach_fermi_velocity(table: MaterialTable, fv_runs: list[FermiVelocityRun]) -> list[str]:
    """Fill the v_F(T) column of ``table``: per model run, the MAE over temperatures (10⁵ m/s) of its v_F(T)
    against the reference run's (all orders when both have them, else first order). Returns notes."""
    notes = []
    mine = [r for r in fv_runs if (r.config.get("material") or {}).get("name") == table.material]
    refs = [r for r in mine if r.config.get("calculator") == "reference"]
    models = [r for r in mine if r.config.get("calculator") == "model"]
    if not models:
        return notes
    if len(refs) != 1:
        raise CompareError(
            f"v_F(T) of {table.material}: {len(refs)} reference runs ({[str(r.dir) for r in refs]}) for "
            f"{len(models)} model runs. Fix: pass exactly one hedgenet-fermi-velocity calculator=reference run per material.")
    ref = refs[0]
    by_model = {Path(str(r.config.get("model_path"))).resolve(): r for r in models}
    matched = set()
    for arm in table.arms:
        for i, run in enumerate(arm.runs):
            fv = by_model.get(run.model_path.resolve())
            if fv is None:
                continue
            matched.add(fv.dir)
            if _vf_settings(fv) != _vf_settings(ref):
                raise CompareError(f"v_F runs {fv.dir} and {ref.dir} differ in settings (fermi_velocity, sampler or "
                                   "material). Fix: run the model and the reference with the same settings.")
            a, b = fv.summary["by_temperature"], ref.summary["by_temperature"]
            order = "all" if "all" in a and "all" in b else "first"
            if order not in a or order not in b:
                raise CompareError(f"v_F runs {fv.dir} and {ref.dir} share no order (first/all). Fix: same fermi_velocity.orders.")
            temps = sorted(set(a[order]) & set(b[order]), key=float)
            curve = {float(T): float(a[order][T]["v0_1e5_m_s"]) for T in temps}
            table.vf_reference = {float(T): float(b[order][T]["v0_1e5_m_s"]) for T in temps}
            table.vf_order = order
            arm.vf_curves[i] = curve
            arm.values[i]["vf_mae_1e5_m_s"] = float(np.mean([abs(curve[T] - table.vf_reference[T]) for T in curve]))
    for r in models:
        if r.dir not in matched:
            notes.append(f"v_F run {r.dir}: its model {r.config.get('model_path')} is not among the compared runs (ignored)")
    return notes


# ----------------------------------------------------------------------------------------------- margins
def pick_versus(arms: list[Arm]) -> str | None:
    """The arm the margins are measured against: HedgeNet with its heterogeneous relations, if present."""
    for a in arms:
        r = a.runs[0]
        if r.config["model"]["name"] == "hedgenet" and r.relations != "single":
            return a.name
    return None


def margin_pct(ours: float, theirs: float) -> float:
    """The paper's margin of an error ``ours`` against ``theirs``: 100·(ours/theirs − 1) %, negative when ours is
    lower (the paper's "−15 % phonon MAE against MACE")."""
    return 100.0 * (ours / theirs - 1.0)


def margins(table: MaterialTable) -> list[dict]:
    """For each other arm and key of :data:`MARGIN_KEYS`: the versus arm's :func:`margin_pct` against the other,
    from the means, and per seed both have (mean ± std over seeds)."""
    if table.versus is None:
        return []
    base = next(a for a in table.arms if a.name == table.versus)
    out = []
    for other in table.arms:
        if other is base:
            continue
        for key in MARGIN_KEYS:
            sb, so = base.stats(key), other.stats(key)
            if sb is None or so is None or so[0] == 0:
                continue
            by_seed_b = {r.seed: v[key] for r, v in zip(base.runs, base.values) if v.get(key) is not None}
            by_seed_o = {r.seed: v[key] for r, v in zip(other.runs, other.values) if v.get(key) is not None}
            paired = [margin_pct(by_seed_b[s], by_seed_o[s]) for s in sorted(set(by_seed_b) & set(by_seed_o))
                      if by_seed_o[s] != 0]
            out.append({"versus": base.name, "other": other.name, "key": key,
                        "margin_pct": margin_pct(sb[0], so[0]),
                        "paired_mean_pct": float(np.mean(paired)) if paired else None,
                        "paired_std_pct": float(np.std(paired, ddof=1)) if len(paired) > 1 else None,
                        "n_pairs": len(paired)})
    return out


# ----------------------------------------------------------------------------------------------- build
def build_tables(groups: dict, phonons, cache_dir: Path, fv_runs=(), log=print,
                 phonon_source=None) -> tuple[list[MaterialTable], list[str]]:
    """One :class:`MaterialTable` per material of ``groups`` (:func:`hedgenet.report.runs.group_runs`).

    ``phonons``: a :class:`hedgenet.physics.comparison.PhononSettings`; ``phonon_source``: the module (or
    object) with ``phonon_cell``, ``reference_phonons`` and ``model_phonons`` of that name
    (:mod:`hedgenet.physics.comparison`), which computes the phonons; None: no phonon column."""
    tables, notes = [], []
    for material, arm_runs in sorted(groups.items()):
        everyone = [r for rs in arm_runs.values() for r in rs]
        split, n_eval = split_of(everyone)
        arms = []
        for name, runs in sorted(arm_runs.items()):
            arm = Arm(name, runs, [run_values(r, split) for r in runs], [None] * len(runs), [None] * len(runs))
            arms.append(arm)
        if phonon_source is None:
            reference, unit, supercell = None, None, "phonons not computed"
        else:
            try:
                reference, unit, supercell = phonon_source.phonon_cell(everyone[0].config, phonons, cache_dir)
            except ValueError as err:
                raise CompareError(f"{everyone[0].dir}: {err}") from None
        ref_bands = None
        if reference is None:
            note = supercell
        else:
            ref_bands = phonon_source.reference_phonons(everyone[0].config["material"], reference, unit, supercell,
                                                        phonons, cache_dir, log)
            note = (f"phonon MAE: each model's finite-difference phonons (±{phonons.displacement_A} Å) against the "
                    f"reference's ({reference.name}) on the {supercell[0]}×{supercell[1]} supercell of the relaxed "
                    f"unit cell, all bands at {len(ref_bands['distances'])} q-points along {phonons.path} (THz)")
            for arm in arms:
                for i, run in enumerate(arm.runs):
                    log(f"{material}: phonons of {arm.name} seed {run.seed}")
                    try:
                        f = phonon_source.model_phonons(run.model_path, unit, supercell, phonons)
                    except ValueError as err:
                        raise CompareError(f"{run.dir}: {err}") from None
                    arm.phonons[i] = f
                    if f is not None:
                        arm.values[i]["phonon_mae_THz"] = float(np.abs(f - ref_bands["frequencies_THz"]).mean())
        table = MaterialTable(material, split, n_eval, arms, note, ref_bands)
        notes += attach_fermi_velocity(table, list(fv_runs))
        table.versus = pick_versus(arms)
        table.margins = margins(table)
        tables.append(table)
    return tables, notes
