"""A long-range interlayer dispersion tail: what binds van der Waals layers beyond the message cutoff.

HedgeNet's interlayer messages end at ``r_inter`` (5 Å by default). A reference with dispersion (xTB's
D3, a DFT-D or many-body dispersion functional) still binds two graphene layers at 5–15 Å: measured on the
AB bilayer, xTB's energy rises by 18.3 meV/atom from the equilibrium separation to +2.0 Å, where no atom pair
lies within 5 Å and a message-passing model's energy no longer changes (docs/results_training.md). The
tail is the D3 form with Becke–Johnson damping over every pair of atoms in *different* layers,

    E_disp = −Σ_{i<j, layer_i ≠ layer_j} s(r_ij) [C6_ab / (r⁶ + R0⁶) + C8_ab / (r⁸ + R0⁸)]    (eV, Å),

with learnable C6_ab (eV Å⁶) and C8_ab (eV Å⁸) > 0 per unordered species pair (a, b) and a C² switch s(r)
from 1 at ``cutoff_A − switch_A`` to 0 at ``cutoff_A``. The coefficients start at GFN1-xTB's own interlayer
attraction of sp² carbon beyond the messages' reach: C6 = 18.6 eV Å⁶, C8 = 208 eV Å⁸ with D3's Becke–Johnson
radius for GFN1-xTB's a1 = 0.63, a2 = 5.0 bohr (R0 = 4.44 Å), fitted to xTB's binding curve of the AB bilayer
(5×5, no periodic image of a layer within 50 Å) from +1.6 to +4 Å beyond d₀ (4.9–7.3 Å apart), which they follow
within 0.015 meV/atom (tests/test_dispersion.py). D3's nominal values for sp² carbon, C6 = 25 a.u. = 14.9 eV Å⁶
and s8·C8 = 2.4 · 3 C6 ⟨r⁴⟩/⟨r²⟩ = 290 eV Å⁸ (the start before), bind those layers 0.32 meV/atom too weakly
between +1.6 and +4 Å (4 % of xTB's 8.3 meV/atom there); in the labelled 23.3 Å cells that shortfall is the whole
far binding-curve error of the production model (docs/results_training.md). Where those values are the
reference's own (GFN1-xTB on carbon: :func:`held_tail_mismatch`), the tail is held there, a fixed physical
baseline under the learned energy as MACE and NequIP add D3 or ZBL; the messages
learn what it misses inside their cutoff. Elsewhere (``learnable``) C6 and C8 are learned on a log scale,
C = C_init · exp(λ) with λ starting at 0 (C_init is kept in the model, so a model keeps the tail it was
trained with): an optimizer step changes C by a fraction, whatever its size in eV Å⁸, so
training can take them to the reference's dispersion (down to ≈ 0 for one without). (Learned directly, C8 = 290
eV Å⁸ moved by less than 1 % in 11 000 Adam steps of lr 0.005; learned on the log scale from xTB's data, which
barely constrains them beyond the messages' reach, C6 and C8 drifted 25 % below xTB's own values in the main job.)
Interlayer pairs only: within a layer the bonds dominate and the messages' cutoff holds what matters, and a rigid
layer's own tail never changes.

Optionally (``n_pair_functions`` K > 0) a learnable interlayer pair potential is added to every pair's energy,

    ΔE_pair(r) = s(r) · 10⁻³ Σ_k w_ab,k exp(−((r − μ_k)/σ)²)    (eV; w in meV),

with K Gaussians centred evenly from ``PAIR_R_MIN_A`` to ``cutoff_A − switch_A`` (σ their spacing) and weights
per species pair starting at 0: a direct channel for the layers' mean binding E(d), apart from the messages,
whose interlayer radial functions also carry the registry (sliding, shear).

Summed over the other layer, what is left beyond ``cutoff_A`` is ≈ π n C6 / (2 r_c⁴) per atom (n atoms per
Å² of a layer), independent of the layers' separation: 0.2 meV/atom for graphene at 12 Å, a constant.
"""

from __future__ import annotations

import torch
from torch import nn as tnn

from hedgenet.graphs.relations import unordered_pair_index

C6_INIT_EV_A6 = 18.6
"""Initial C6 (eV Å⁶): GFN1-xTB's interlayer attraction of sp² carbon at 4.9–7.3 Å (module docstring)."""
C8_INIT_EV_A8 = 208.0
"""Initial C8 (eV Å⁸), fitted with C6 (module docstring)."""
C6_D3_EV_A6, C8_D3_EV_A8 = 14.9, 290.0
"""D3's nominal sp²-carbon values with GFN1-xTB's s8 = 2.4 (25 a.u.; 2.4 · 3 C6 ⟨r⁴⟩/⟨r²⟩): the initial values of
model files written before the fitted ones, which record no initial values of their own."""
R0_A = 4.44
"""Becke–Johnson damping radius (Å): GFN1-xTB's a1 = 0.63, a2 = 5.0 bohr with carbon's √(C8/C6)."""
PAIR_R_MIN_A = 3.0
"""Centre (Å) of the pair potential's first Gaussian: below the closest interlayer pairs of compressed layers."""
INITIAL_VALUES_OF = ("GFN1-xTB", (6,))
"""The reference method and the elements whose dispersion the initial C6, C8 and R0 are (GFN1-xTB's interlayer
attraction of sp² carbon)."""


def held_tail_mismatch(elements, solver_methods) -> str | None:
    """Why the tail's initial coefficients are not the reference's own dispersion for data of ``elements`` (atomic
    numbers) labelled by ``solver_methods`` (the datasets' ``solver_settings["method"]``, None where unrecorded), or
    None where they are (GFN1-xTB on carbon): the test for holding the tail fixed."""
    method, own = INITIAL_VALUES_OF
    other = sorted({int(z) for z in elements} - set(own))
    if other:
        return f"elements {other} besides carbon (the initial C6, C8 are carbon's)"
    methods = sorted({str(m) if m else "unrecorded" for m in solver_methods})
    if methods != [method]:
        return f"reference method {methods or ['unrecorded']} (the initial C6, C8 are {method}'s own)"
    return None


ORIGIN_BUFFERS = {"c6": "c6_init_eV_A6", "c8": "c8_init_eV_A8"}
"""The buffers that hold a tail's C_init per unordered species pair."""


def upgrade_state_dict(state: dict, prefix: str = "dispersion.") -> dict:
    """``state`` in the current layout, with the same coefficients: a tail saved before the log scale (softplus
    parameters ``raw_c6``, ``raw_c8``) on the log scale, and a tail saved before its C_init were kept (D3's nominal
    values, :data:`C6_D3_EV_A6`) with those; a current state is returned unchanged."""
    for name, legacy in (("c6", C6_D3_EV_A6), ("c8", C8_D3_EV_A8)):
        raw = state.pop(f"{prefix}raw_{name}", None)
        if raw is not None:
            value = torch.nn.functional.softplus(raw.double())
            state[f"{prefix}log_{name}_ratio"] = torch.log(value / legacy).to(raw.dtype)
        log_ratio = state.get(f"{prefix}log_{name}_ratio")
        if log_ratio is not None and f"{prefix}{ORIGIN_BUFFERS[name]}" not in state:
            state[f"{prefix}{ORIGIN_BUFFERS[name]}"] = torch.full_like(log_ratio, legacy)
    return state


def switch(r: torch.Tensor, r_on: float, r_off: float) -> torch.Tensor:
    """1 below ``r_on``, 0 above ``r_off``, 1 − 10x³ + 15x⁴ − 6x⁵ between (x = (r − r_on)/(r_off − r_on)):
    continuous with its first and second derivatives, so forces and force constants are too."""
    x = ((r - r_on) / (r_off - r_on)).clamp(0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


class InterlayerDispersion(tnn.Module):
    """The tail E_disp (module docstring) for ``n_species`` species.

    ``forward(species, index, vec)`` takes the tail's directed pairs (``index`` (2, E): i ← j, both orders of
    every pair present, as the graph builder lists them; ``vec`` (E, 3) r_ij in Å) and returns the per-atom
    energies (N,) in eV, half of every pair's energy to each of its atoms."""

    def __init__(self, n_species: int, cutoff_A: float, switch_A: float = 2.0, n_pair_functions: int = 0,
                 learnable: bool = True):
        super().__init__()
        if not cutoff_A > switch_A > 0:
            raise ValueError(f"dispersion cutoff {cutoff_A} Å must exceed its switching width {switch_A} Å (> 0). "
                             "Fix: relations.dispersion_cutoff_A of 10–15 Å, or null for no tail.")
        if n_pair_functions < 0 or (n_pair_functions and cutoff_A - switch_A <= PAIR_R_MIN_A):
            raise ValueError(f"interlayer pair potential: {n_pair_functions} functions between {PAIR_R_MIN_A} Å and "
                             f"{cutoff_A - switch_A} Å (the tail's cutoff less its switch). Fix: "
                             "relations.interlayer_pair_functions ≥ 0 and relations.dispersion_cutoff_A > 5 Å.")
        self.n_species = int(n_species)
        self.cutoff_A = float(cutoff_A)
        self.switch_A = float(switch_A)
        n_pairs = self.n_species * (self.n_species + 1) // 2
        self.log_c6_ratio = tnn.Parameter(torch.zeros(n_pairs))
        """ln(C6 / C_init) per unordered species pair."""
        self.log_c8_ratio = tnn.Parameter(torch.zeros(n_pairs))
        """ln(C8 / C_init) per unordered species pair."""
        self.register_buffer(ORIGIN_BUFFERS["c6"], torch.full((n_pairs,), C6_INIT_EV_A6, dtype=torch.float64))
        self.register_buffer(ORIGIN_BUFFERS["c8"], torch.full((n_pairs,), C8_INIT_EV_A8, dtype=torch.float64))
        self.learnable = bool(learnable)
        """False: C6 and C8 stay at their initial values (no gradient; the pair potential, if any, still learns)."""
        self.log_c6_ratio.requires_grad_(self.learnable)
        self.log_c8_ratio.requires_grad_(self.learnable)
        self.n_pair_functions = int(n_pair_functions)
        self.pair_weights_meV = None
        if self.n_pair_functions:
            centres = torch.linspace(PAIR_R_MIN_A, self.cutoff_A - self.switch_A, self.n_pair_functions)
            self.register_buffer("pair_centres_A", centres)
            self.pair_width_A = float(centres[1] - centres[0]) if self.n_pair_functions > 1 else 1.0
            self.pair_weights_meV = tnn.Parameter(torch.zeros(n_pairs, self.n_pair_functions))

    def coefficients(self) -> dict[str, torch.Tensor]:
        """``{"C6_eV_A6": (P,), "C8_eV_A8": (P,)}`` per unordered species pair."""
        return {"C6_eV_A6": self.c6_init_eV_A6.to(self.log_c6_ratio.dtype) * self.log_c6_ratio.exp(),
                "C8_eV_A8": self.c8_init_eV_A8.to(self.log_c8_ratio.dtype) * self.log_c8_ratio.exp()}

    def forward(self, species: torch.Tensor, index: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        i, j = index
        r2 = (vec * vec).sum(-1)
        r = r2.sqrt()
        a, b = species[i], species[j]
        pair = unordered_pair_index(torch.minimum(a, b), torch.maximum(a, b), self.n_species)
        coef = self.coefficients()
        c6 = coef["C6_eV_A6"].to(vec.dtype)[pair]
        c8 = coef["C8_eV_A8"].to(vec.dtype)[pair]
        r6 = r2**3
        e_pair = -(c6 / (r6 + R0_A**6) + c8 / (r6 * r2 + R0_A**8))
        if self.pair_weights_meV is not None:
            gauss = torch.exp(-(((r[:, None] - self.pair_centres_A.to(vec.dtype)) / self.pair_width_A) ** 2))
            e_pair = e_pair + 1e-3 * (gauss * self.pair_weights_meV.to(vec.dtype)[pair]).sum(-1)
        e_pair = e_pair * switch(r, self.cutoff_A - self.switch_A, self.cutoff_A)
        return vec.new_zeros(species.shape[0]).index_add(0, i, 0.5 * e_pair)


__all__ = ["InterlayerDispersion", "held_tail_mismatch", "switch", "upgrade_state_dict"]
