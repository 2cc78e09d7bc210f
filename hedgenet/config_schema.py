# OmegaConf 2.3 reads typing.List/Dict/Optional (not list[int] or X | None) in structured configs
# ruff: noqa: UP006, UP035, UP045, RUF009
"""The schemas of hedgenet's configs: one dataclass per section, registered in Hydra's ConfigStore.

Every primary config (``label``, ``train``, ``phonons``, ``epi``, ``fermi_velocity``, ``pipeline``) has a root
schema here (:data:`SCHEMAS`); :func:`hedgenet.config.check_config` merges a composed config into it at the
start of each run, so a key no schema names, or a value of the wrong type, anywhere (command line or a YAML
file a user wrote) is refused with a :class:`~hedgenet.config.ConfigError` naming the key, a close match and
the fix. The schemas are also stored in Hydra's ConfigStore as ``schema/<name>`` (e.g. for
``hedgenet-train --cfg job`` tooling or a user's own app that lists ``- /schema/train`` in its defaults).

Sections marked :func:`open_section` take keys beyond the ones declared: their extra keys go to whatever
consumes the section, which checks them itself (``trainer``: keyword arguments of ``lightning.Trainer``;
``reference``: the solver's settings, checked by :func:`hedgenet.reference.make_reference`; ``model.size``:
the model family's size dict; ``callbacks``: instantiable Lightning callbacks; the optimizer and scheduler
settings; a material's builder ``params``, checked against its builder in :func:`check_material`).
"""


import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

_OPEN = {"open": True}


def open_section(factory=dict):
    """A dataclass field whose section also takes keys the schema does not declare."""
    return field(default_factory=factory, metadata=_OPEN)


# --- shared sections ----------------------------------------------------------------------------------------

@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    cache_dir: str = MISSING
    output_dir: Optional[str] = None


@dataclass
class RelaxStep:
    parameter: str = MISSING
    builder: str = MISSING
    supercell: List[int] = MISSING
    bounds: List[float] = MISSING


@dataclass
class MaterialConfig:
    name: str = MISSING
    builder: str = MISSING
    params: Dict[str, Any] = field(default_factory=dict)   # keys checked against the builder (check_material)
    relax: List[RelaxStep] = field(default_factory=list)
    label_supercell: List[int] = MISSING
    block_cutoff_A: float = MISSING   # Å, the block cutoff the labelling supercell allows (width > 2 × cutoff)
    description: Optional[str] = None
    path: Optional[str] = None        # material=file: the structure file (POSCAR, extxyz, CIF, …)


@dataclass
class ReferenceConfig:  # open: the solver's own settings (make_reference checks them)
    name: str = MISSING
    block_cutoff: float = MISSING


@dataclass
class LoggerConfig:
    name: str = MISSING
    save_dir: Optional[str] = None
    project: Optional[str] = None
    mode: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    run_name: Optional[str] = None   # W&B run name (null: the run directory)
    log_model: bool = True           # W&B: model.pt as a `model` artifact (hedgenet-train)


@dataclass
class SamplerConfig:
    name: str = MISSING
    n_samples: int = MISSING
    quantum: bool = MISSING
    cutoff_frequency_THz: float = MISSING
    # |ν| (THz) of an imaginary non-acoustic mode that stops the run; null: never stop (the modes are reported)
    imaginary_threshold_THz: Optional[float] = 0.1


@dataclass
class TemperaturesConfig:
    K: List[float] = MISSING


# --- hedgenet-label -----------------------------------------------------------------------------------------

@dataclass
class RattleConfig:
    amplitudes_A: List[float] = MISSING
    n_per_amplitude: int = MISSING


@dataclass
class ThermalConfig:
    temperatures_K: List[float] = MISSING
    n_per_temperature: int = MISSING
    quantum: bool = MISSING
    cutoff_frequency_THz: float = MISSING
    imaginary_threshold_THz: float = 0.1   # |ν| of an imaginary non-acoustic mode that stops the run (THz)
    fc_displacement_A: float = MISSING


@dataclass
class RigidConfig:
    shifts_A: List[Any] = field(default_factory=list)   # [dx, dy, dz] Å of the top layer per sample (checked when used)


@dataclass
class StrainConfig:
    strains: List[Any] = field(default_factory=list)   # in-plane [exx, eyy, exy] (fractions) per sample (checked when used)
    rattle_A: float = 0.0                                # Gaussian rattle on top of each strained cell, Å per component


@dataclass
class SecondOrderConfig:
    n_pairs: int = 0   # thermal ± pairs of the labelling cell whose even response ½[H(u)+H(−u)] − H(0) is stored
    temperature_K: float = 300.0   # their temperature (K)


@dataclass
class DatasetConfig:
    name: str = MISSING
    path: str = MISSING
    supercell: List[int] = MISSING
    rattle: RattleConfig = field(default_factory=RattleConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    rigid: RigidConfig = field(default_factory=RigidConfig)
    strain: StrainConfig = field(default_factory=StrainConfig)
    force_constants: bool = False   # store the reference's force constants of the labelling cell (force-constant loss)
    force_constants_supercell: Optional[List[int]] = None   # of this supercell instead (None: the labelling cell)
    couplings: bool = False   # store the reference's dH/du, dS/du of the force-constant cell (coupling loss)
    couplings_displacement_A: float = 0.005   # their central-difference step (Å)
    second_order: SecondOrderConfig = field(default_factory=SecondOrderConfig)   # the even response of ± pairs
    n_workers: int = MISSING
    consolidate_every_s: float = MISSING
    num_shards: int = MISSING
    shard_index: int = MISSING


@dataclass
class LabelConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    reference: ReferenceConfig = open_section(ReferenceConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    temperatures: TemperaturesConfig = field(default_factory=TemperaturesConfig)
    task_name: str = MISSING
    seed: int = MISSING
    progress: bool = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)


# --- hedgenet-train -----------------------------------------------------------------------------------------

@dataclass
class ModelConfig:
    name: str = MISSING
    size: Dict[str, Any] = open_section()   # the family's size dict (size_with_defaults checks its keys)
    num_basis: int = MISSING
    radial_hidden: int = MISSING


@dataclass
class RelationsConfig:
    name: str = MISSING
    r_intra: float = MISSING
    r_inter: float = MISSING
    r_single: Optional[float] = None
    registry_widths_A: list = field(default_factory=list)
    dispersion_cutoff_A: Optional[float] = None
    interlayer_pair_functions: int = 0
    dispersion_learnable: Any = "auto"  # auto | true | false


@dataclass
class TrainerConfig:  # open: every other key is a keyword argument of lightning.Trainer
    _target_: str = "lightning.Trainer"
    accelerator: str = MISSING
    devices: Any = MISSING          # int, "auto" or a list of device ids
    strategy: str = MISSING
    precision: Any = MISSING        # decides the model dtype too: 64-true → float64
    num_nodes: int = 1


@dataclass
class DataConfig:
    paths: List[str] = MISSING
    test_paths: List[str] = field(default_factory=list)
    val_fraction: float = MISSING
    test_fraction: float = MISSING
    split_seed: int = MISSING
    batch_size: int = MISSING
    num_workers: int = MISSING


@dataclass
class LossWeights:
    energy: float = MISSING
    forces: float = MISSING
    H: float = MISSING
    S: float = MISSING
    H_onsite: float = 0.0   # extra weight on the MSE of the on-site H blocks (eV): the local potential of a displacement
    forces_out_of_plane: float = 0.0   # extra weight on the MSE of the z components (eV/Å): flexural modes
    layer_forces: float = 0.0   # on the MSE of each layer's mean force per atom (eV/Å): interlayer physics
    layer_forces_in_plane: float = 0.0   # the same on its in-plane (x, y) components only: sliding and shear
    virial: float = 0.0   # on the MSE of the virial per atom (eV/atom), where the labels have it: stress, ZA branch
    force_constants: float = 0.0   # on the MSE of Hessian–vector products (eV/Å²) against the stored reference ones
    force_constants_relative: float = 0.0   # the same relative to the reference's own Φ: soft modes weigh like stiff ones
    interlayer_modes: float = 0.0   # on the squared relative error of Φv for rigid interlayer translations (shear, breathing)
    couplings: float = 0.0   # on the MSE of dH/du (eV/Å) and dS/du (1/Å) against the stored reference couplings
    second_order: float = 0.0   # on the MSE of the even response of ± pairs (eV; S: 1) against the stored reference's
    binding: float = 0.0   # on the MSE of energy differences (eV/atom) between rigid-layer cells of one dataset


@dataclass
class OptimizerConfig:  # open: further keyword arguments of the optimizer
    name: str = MISSING
    lr: float = MISSING


@dataclass
class SchedulerConfig:  # open: the scheduler's own settings
    name: Optional[str] = None


@dataclass
class ForceConstantProbes:
    every_n_steps: int = 1   # training steps between two force-constant probes
    n_vectors: int = 1       # random displacement patterns per probe
    inversion_pairs: bool = True   # patterns equal on inversion partners, one displaced copy each (cells with inversion)
    interlayer_every_n_steps: int = 1   # training steps between two interlayer-mode probes
    couplings_every_n_steps: int = 1   # training steps between two coupling probes (one displaced atom and direction)
    second_order_every_n_steps: int = 1   # training steps between two second-order probes (one ± pair)
    binding_every_n_steps: int = 1   # training steps between two binding probes (one pair of rigid-layer cells)


@dataclass
class UncertaintyConfig:
    method: Optional[str] = "last_layer"   # last_layer: the single model's own estimate, stored in model.pt; null: none
    trust_factor: float = 2.0   # physics runs warn when the spread exceeds this × the held-out RMS error


@dataclass
class TrainSection:
    max_epochs: int = MISSING
    loss_weights: LossWeights = field(default_factory=LossWeights)
    force_constants: ForceConstantProbes = field(default_factory=ForceConstantProbes)
    optimizer: OptimizerConfig = open_section(OptimizerConfig)
    scheduler: SchedulerConfig = open_section(SchedulerConfig)
    ema_decay: Optional[float] = None
    gradient_clip_val: Optional[float] = None
    hamiltonian_gauge: str = "fermi"
    block_edge_fraction: float = 1.0   # random fraction of the block edges in each training step's H and S loss
    init_from: Optional[str] = None
    resume: Optional[str] = None
    log_every_n_steps: int = MISSING
    uncertainty: UncertaintyConfig = field(default_factory=UncertaintyConfig)


@dataclass
class SweepSamplerConfig:
    name: str = "tpe"                 # tpe | random
    seed: Optional[int] = 0           # trial n samples with seed + n; null: not reproducible
    n_startup_trials: int = 10        # tpe: random trials first


@dataclass
class SweepPrunerConfig:
    name: str = "median"              # median | successive_halving | none
    n_startup_trials: int = 5         # median: trials completed before any is pruned
    n_warmup_steps: int = 0           # median: epochs before a trial can be pruned
    min_resource: int = 1             # successive_halving: epochs before the first rung
    reduction_factor: int = 3         # successive_halving


@dataclass
class SweepConfig:
    """``hedgenet-sweep`` (conf/hparams_search/<family>.yaml): the Optuna study and its search space."""

    study_name: str = MISSING
    storage: Optional[str] = None     # sqlite:///<file>, journal:<file> or an RDB URL; None: sqlite under sweeps/
    dir: str = MISSING                # trial_<number>/ run directories and sweep.log
    n_trials: int = 20                # trials this launch adds
    baseline_trial: bool = True       # a new study's first trial is the composed config's own values (the untuned run)
    objectives: List[str] = field(default_factory=lambda: ["val/loss"])
    directions: List[str] = field(default_factory=lambda: ["minimize"])
    sampler: SweepSamplerConfig = field(default_factory=SweepSamplerConfig)
    pruner: SweepPrunerConfig = field(default_factory=SweepPrunerConfig)
    params: Dict[str, Any] = field(default_factory=dict)   # config key -> distribution (choice/interval/range)


@dataclass
class CommitteeSection:
    size: Optional[int] = None
    bootstrap: bool = False


@dataclass
class TrainConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    reference: ReferenceConfig = open_section(ReferenceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    relations: RelationsConfig = field(default_factory=RelationsConfig)
    trainer: TrainerConfig = open_section(TrainerConfig)
    callbacks: Dict[str, Any] = open_section()   # name → {_target_: a Lightning callback, its arguments}
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    task_name: str = MISSING
    task: str = MISSING
    seed: int = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainSection = field(default_factory=TrainSection)
    sweep: Optional[SweepConfig] = None   # set by hparams_search=<family>: read by hedgenet-sweep only
    committee: CommitteeSection = field(default_factory=CommitteeSection)


# --- physics stages -----------------------------------------------------------------------------------------

@dataclass
class PhononsSection:
    supercell: List[int] = MISSING
    method: str = MISSING
    fc_displacement_A: float = MISSING
    path: str = MISSING
    npoints: int = MISSING
    dos_mesh: List[int] = MISSING
    dos_sigma_THz: float = MISSING


@dataclass
class CalculationConfig:
    """What every physics command shares: the material, the reference, which calculator (``reference`` or
    ``model`` with ``model_path``), the run's logger and paths."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    reference: ReferenceConfig = open_section(ReferenceConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    task_name: str = MISSING
    calculator: str = MISSING
    model_path: Optional[str] = None
    device: str = "auto"              # a model's device: auto (CUDA when present) | cpu | cuda | cuda:N


@dataclass
class PhononsConfig(CalculationConfig):
    compare_with: Optional[str] = None
    phonons: PhononsSection = field(default_factory=PhononsSection)


@dataclass
class EpiSection:
    supercell: List[int] = MISSING
    method: str = MISSING
    epi_displacement_A: float = MISSING
    fc_displacement_A: float = MISSING
    force_constants_supercell: Optional[List[int]] = None   # None: epi.supercell itself
    n_states: int = MISSING
    report_threshold_meV: float = MISSING


@dataclass
class EpiConfig(CalculationConfig):
    compare_with: Optional[str] = None
    epi: EpiSection = field(default_factory=EpiSection)


@dataclass
class FermiVelocitySection:
    supercell: List[int] = MISSING
    temperatures_K: List[float] = MISSING
    orders: List[str] = MISSING
    force_constants_supercell: Optional[List[int]] = None   # None: the sampling cell itself
    force_constants_from: Optional[str] = None   # another run's phonopy_params.yaml instead of the calculator's
    fc_displacement_A: float = MISSING
    epi_displacement_A: float = MISSING
    q_max_inv_A: float = MISSING
    n_q: int = MISSING
    window_eV: float = MISSING
    layers: Optional[int] = None      # None: the layers of the cell the bands unfold onto
    unfold_layer: Any = "auto"        # auto | None (unit cell) | layer index
    n_bootstrap: int = MISSING
    fixed_energy_eV: float = 0.2      # band velocity this far above the charge-neutrality point (eV)
    error_method: str = "auto"        # auto | bootstrap | jackknife
    workers: int = 1                  # unfolding worker processes: one MC Hamiltonian per job (one BLAS thread each)
    eigensolver_precision: str = "single"  # single (polished in double) | double


@dataclass
class FermiVelocityConfig(CalculationConfig):
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    temperatures: TemperaturesConfig = field(default_factory=TemperaturesConfig)
    seed: int = MISSING
    progress: bool = MISSING
    fermi_velocity: FermiVelocitySection = field(default_factory=FermiVelocitySection)


# --- hedgenet-pipeline --------------------------------------------------------------------------------------

@dataclass
class PipelineOverrides:  # each stage's overrides are checked against that stage's schema once composed
    common: Dict[str, Any] = field(default_factory=dict)
    label: Dict[str, Any] = field(default_factory=dict)
    train: Dict[str, Any] = field(default_factory=dict)
    active: Dict[str, Any] = field(default_factory=dict)
    phonons: Dict[str, Any] = field(default_factory=dict)
    epi: Dict[str, Any] = field(default_factory=dict)
    fermi_velocity: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    reference: ReferenceConfig = open_section(ReferenceConfig)
    temperatures: TemperaturesConfig = field(default_factory=TemperaturesConfig)
    task_name: str = MISSING
    stages: List[str] = MISSING
    reference_stages: List[str] = field(default_factory=list)
    model_path: Optional[str] = None
    dry_run: bool = False
    min_free_disk_GB: float = MISSING
    overrides: PipelineOverrides = field(default_factory=PipelineOverrides)


# --- hedgenet-active ----------------------------------------------------------------------------------------

@dataclass
class ActiveSection:
    strategy: str = MISSING
    score: str = MISSING
    batch_size: int = MISSING
    max_rounds: int = MISSING
    max_labels: int = MISSING
    target_force_spread_meV_A: Optional[float] = None
    committee_size: int = MISSING
    phonon_probes: int = 32
    seed: int = 0
    labels_from: Optional[str] = None


@dataclass
class ActiveConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    reference: ReferenceConfig = open_section(ReferenceConfig)
    temperatures: TemperaturesConfig = field(default_factory=TemperaturesConfig)
    task_name: str = MISSING
    seed: int = MISSING
    progress: bool = MISSING
    seed_data: List[str] = field(default_factory=list)
    test_paths: List[str] = field(default_factory=list)
    pool: DatasetConfig = field(default_factory=DatasetConfig)
    active: ActiveSection = field(default_factory=ActiveSection)
    train: Dict[str, Any] = field(default_factory=dict)   # checked against train.yaml's schema when composed


# --- hedgenet-predict ---------------------------------------------------------------------------------------

@dataclass
class PredictSection:
    bands: bool = MISSING
    path: str = MISSING
    npoints: int = MISSING
    max_dense_orbitals: int = MISSING
    phonons: bool = MISSING
    phonon_supercell: List[int] = MISSING
    method: str = MISSING
    fc_displacement_A: float = MISSING


@dataclass
class PredictConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    task_name: str = MISSING
    model_path: str = MISSING
    structure: str = MISSING
    device: str = "auto"
    predict: PredictSection = field(default_factory=PredictSection)


SCHEMAS = {
    "label": LabelConfig, "train": TrainConfig, "phonons": PhononsConfig, "epi": EpiConfig,
    "fermi_velocity": FermiVelocityConfig, "pipeline": PipelineConfig, "predict": PredictConfig,
    "active": ActiveConfig,
}


def open_paths(schema, prefix: str = "") -> list[str]:
    """Dotted paths of the open sections of ``schema`` (a dataclass), depth first."""
    out = []
    for f in dataclasses.fields(schema):
        path = f"{prefix}{f.name}"
        if f.metadata.get("open"):
            out.append(path)
        ftype = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(ftype):
            out += open_paths(type(ftype), path + ".")
    return out


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore as ``schema/<name>`` (and the shared sections as
    ``schema/<section>/base``)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        cs.store(group="schema", name=name, node=schema)
    for group, node in (("material", MaterialConfig), ("reference", ReferenceConfig), ("trainer", TrainerConfig),
                        ("logger", LoggerConfig), ("sampler", SamplerConfig), ("model", ModelConfig),
                        ("relations", RelationsConfig), ("temperatures", TemperaturesConfig)):
        cs.store(group=f"schema/{group}", name="base", node=node)


register_schemas()
