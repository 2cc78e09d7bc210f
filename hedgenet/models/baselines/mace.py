"""``model=mace``: the real mace-torch ``ScaleShiftMACE``, trained from scratch on hedgenet's batches.

The adapter only translates: a hedgenet :class:`~hedgenet.graphs.neighbors.Graph` (one homogeneous edge
set ``all`` within ``r_max``) becomes MACE's input dict, MACE returns the total energy (eV), and the
common :meth:`~hedgenet.models.base.GraphModel.forward` takes F = −∂E/∂r (eV/Å) by autograd exactly as
for HedgeNet, so training, metrics, saving, ASE forces and force constants (finite differences or the
autograd Hessian) work unchanged. MACE predicts energies and forces only: ``task`` must be ``forces``.

Edge convention: hedgenet's edge (i, j, R) has r_ij = r_j + R·cell − r_i; MACE's ``edge_index`` row 0
is the sender and row 1 the receiver with vector r_receiver − r_sender + shift, so ``[i; j]`` with
``shifts = R·cell`` is the same vector (the edge set is closed under reversal, so every pair carries a
message both ways, as in MACE's own data pipeline).

Data statistics, set by :meth:`MACEModel.init_statistics` as MACE's own ``run_train`` does: atomic
reference energies E0_Z by least squares over the training energies (eV/atom, MACE's ``E0s="average"``),
``scale`` = RMS force component (eV/Å, MACE's ``rms_forces_scaling``), ``shift`` = mean interaction
energy per atom after E0 (≈ 0), and the average neighbour count that normalises the messages.

Import pitfall (``../shared/STACK.md``): ``import mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` for the
whole process and e3nn 0.4.4 needs ``slice`` allow-listed for ``torch.load``. :func:`import_mace_modules`
imports e3nn through :mod:`hedgenet.models._e3nn` first and restores the environment afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Sequence

import numpy as np
import torch

from hedgenet.graphs.neighbors import GraphBuilder
from hedgenet.graphs.relations import make_relations
from hedgenet.models._e3nn import e3nn_build_options, o3
from hedgenet.models.base import (
    TASKS,
    GraphModel,
    as_dtype,
    average_neighbors,
    energy_statistics,
    graph_energies,
    size_with_defaults,
)

MACE_DEFAULT_SIZE = {"channels": 32, "lmax": 1, "num_layers": 2, "max_ell": 2, "correlation": 3}
"""``channels`` x (0e + 1o + ... up to ``lmax``) hidden irreps (MACE's ``hidden_irreps``), ``num_layers``
interactions, spherical harmonics up to ``max_ell`` on the edges, body order ``correlation`` + 1."""


def import_mace_modules():
    """``mace.modules`` without its side effects: e3nn is imported first with the ``torch.load`` fix of
    :mod:`hedgenet.models._e3nn`, the ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` that ``import mace`` exports is
    restored to what it was, and mace's note that the (GPU-only) cuequivariance kernels are absent is
    not printed. Raises ImportError naming the fix when mace-torch is not installed."""
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(key)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            from mace import modules
    except ImportError as err:
        raise ImportError(
            f"model=mace needs mace-torch, which is not installed ({err}). It is an optional extra (it pins e3nn "
            "to 0.4.4). Fix: pip install 'hedgenet[mace]' (or '.[mace]' in a checkout), or choose another model"
        ) from err
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
    return modules


def _sync_after_load(module: "MACEModel", incompatible_keys) -> None:
    module._sync_avg_num_neighbors()  # a module-level function: the model stays picklable (ddp_spawn)


class MACEModel(GraphModel):
    """mace-torch ``ScaleShiftMACE`` behind hedgenet's model interface (energy eV, forces eV/Å).

    Parameters
    ----------
    elements:
        Atomic numbers (one-hot species, MACE's ``atomic_numbers``).
    r_max:
        Cutoff (Å) of MACE's radial basis and of the graph (one edge type).
    size:
        Dict with any of the keys of :data:`MACE_DEFAULT_SIZE` (its values are the defaults).
    task:
        Must be ``forces``: MACE has no Hamiltonian head.
    num_basis, radial_hidden:
        Bessel functions (``num_bessel``) and width of MACE's 3-layer radial MLP (``radial_MLP``).
    num_polynomial_cutoff:
        Order p of MACE's polynomial cutoff envelope (MACE default 5).
    dtype:
        ``float32`` | ``float64``; the model is built in it.
    """

    def __init__(
        self,
        elements: Sequence[int],
        r_max: float = 5.0,
        size: dict | None = None,
        task: str = "forces",
        num_basis: int = 8,
        radial_hidden: int = 64,
        num_polynomial_cutoff: int = 5,
        dtype: str | torch.dtype | None = None,
    ):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid: {sorted(TASKS)}")
        if task != "forces":
            raise ValueError(
                f"model=mace predicts energies and forces only, but task={task!r} asks for Hamiltonian/overlap "
                "blocks. Fix: use task=forces with model=mace, or a Hamiltonian model (model=deeph_e3 or "
                "model=hedgenet_small) for task=hamiltonian|joint."
            )
        if float(r_max) <= 0:
            raise ValueError(f"model=mace: r_max must be positive (Å), got {r_max}")
        dtype = as_dtype(dtype)
        hp = size_with_defaults("mace", size, MACE_DEFAULT_SIZE)
        self.config = {
            "elements": sorted(int(z) for z in set(elements)), "r_max": float(r_max), "size": hp, "task": task,
            "num_basis": int(num_basis), "radial_hidden": int(radial_hidden),
            "num_polynomial_cutoff": int(num_polynomial_cutoff), "dtype": str(dtype).replace("torch.", ""),
        }
        self.task = task
        self.outputs = TASKS[task]
        self.elements = tuple(self.config["elements"])
        self.layout = None
        self.block_cutoff = None
        self.r_max = float(r_max)
        self.size = hp
        self.relations = make_relations("single", cutoff=self.r_max)
        modules = import_mace_modules()
        irreps = o3.Irreps([(hp["channels"], (l, (-1) ** l)) for l in range(hp["lmax"] + 1)])
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # MACE makes its buffers and CG constants in the default dtype
        try:
            with e3nn_build_options():
                self.mace = modules.ScaleShiftMACE(
                    r_max=self.r_max,
                    num_bessel=int(num_basis),
                    num_polynomial_cutoff=int(num_polynomial_cutoff),
                    max_ell=hp["max_ell"],
                    interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
                    interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
                    num_interactions=hp["num_layers"],
                    num_elements=len(self.elements),
                    hidden_irreps=irreps,
                    MLP_irreps=o3.Irreps("16x0e"),
                    atomic_energies=np.zeros(len(self.elements)),
                    avg_num_neighbors=1.0,
                    atomic_numbers=list(self.elements),
                    correlation=hp["correlation"],
                    gate=torch.nn.functional.silu,
                    radial_MLP=[int(radial_hidden)] * 3,
                    atomic_inter_scale=1.0,
                    atomic_inter_shift=0.0,
                )
        finally:
            torch.set_default_dtype(default)
        # MACE keeps avg_num_neighbors as a plain float in each interaction; this buffer carries it
        # through state_dict (save/load, EMA copies) and is pushed into the interactions on load
        self.register_buffer("avg_num_neighbors", torch.tensor(1.0, dtype=dtype))
        self.register_load_state_dict_post_hook(_sync_after_load)

    def _sync_avg_num_neighbors(self) -> None:
        value = float(self.avg_num_neighbors)
        for block in self.mace.interactions:
            block.avg_num_neighbors = value

    def graph_builder(self) -> GraphBuilder:
        """Graphs with one edge type ``all`` within ``r_max`` and no block edges."""
        return GraphBuilder(self.relations, self.elements)

    def _forward(self, batch, pos: torch.Tensor, dtype: torch.dtype, blocks_grad: bool = True) -> dict:
        index = batch.rel_index["all"]
        unit_shifts = batch.rel_shift["all"].to(dtype)
        cell = batch.cell.to(dtype)
        shifts = torch.einsum("ek,ekl->el", unit_shifts, cell[batch.batch[index[0]]])
        ptr = torch.cat([batch.n_atoms.new_zeros(1), torch.cumsum(batch.n_atoms, 0)])
        data = {
            # MACE calls positions.requires_grad_(True): never on the caller's tensor
            "positions": pos if pos.requires_grad else pos.detach(),
            "node_attrs": torch.nn.functional.one_hot(batch.species, len(self.elements)).to(dtype),
            "edge_index": index,
            "shifts": shifts,
            "unit_shifts": unit_shifts,
            "cell": cell.reshape(-1, 3),
            "batch": batch.batch,
            "ptr": ptr,
        }
        out = self.mace(data, training=False, compute_force=False)
        # MACE sums E0_Z + the learned energies per graph in the model's dtype; its node energies are float64
        return {"energy": graph_energies(out["node_energy"], batch), "node_energy": out["node_energy"].to(dtype)}

    @torch.no_grad()
    def init_statistics(self, graphs) -> dict:
        """MACE's data statistics from training graphs: E0_Z (eV/atom), scale (RMS force, eV/Å), shift
        (mean interaction energy per atom after E0, eV) and the average neighbour count."""
        avg = average_neighbors(graphs, lambda g: g.rel_index["all"].shape[1])
        self.avg_num_neighbors.fill_(avg)
        self._sync_avg_num_neighbors()
        stats = {"avg_num_neighbors/all": avg}
        e = energy_statistics(graphs, len(self.elements))
        if e:
            self.mace.atomic_energies_fn.atomic_energies.copy_(torch.as_tensor(e["shift"]))
            per_atom = (e["energies"] - e["counts"] @ e["shift"]) / e["counts"].sum(1)
            shift = float(per_atom.mean())
            self.mace.scale_shift.shift.fill_(shift)
            stats.update(E0_eV=e["shift"].tolist(), interaction_shift_eV=shift)
        if "force_rms" in e:
            self.mace.scale_shift.scale.fill_(max(e["force_rms"], 1e-3))
            stats["scale_eV_per_A"] = e["force_rms"]
        return stats
