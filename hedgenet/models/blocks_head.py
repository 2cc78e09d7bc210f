"""Equivariant orbital-block heads (DeepH-E3 style): node/edge irreps -> H_ij(R) or S_ij(R) blocks.

Orbital convention: :mod:`hedgenet.orbitals.layout` (shells per element, e3nn real spherical harmonics,
a block of shells (l1, l2) transforms as ``D^{l1}(R) B D^{l2}(R)^T``).

A block of shells (l1, l2) is a tensor in l1 ⊗ l2 = ⊕_{L=|l1−l2|}^{l1+l2} L, every L with parity
(−1)^(l1+l2) (orbitals of angular momentum l have parity (−1)^l). The head predicts one irrep per
(l1, l2, k, L) -- ``k`` counts the shell pairs with the same (l1, l2) within one element pair -- and the
Clebsch–Gordan coefficients (e3nn ``o3.wigner_3j``) put them together into the (2l1+1, 2l2+1) sub-block:
``B[m1, m2] = Σ_L √(2L+1) Σ_M C^{l1 l2 L}[m1, m2, M] x_L[M]``. For every ordered pair of species this
change of basis is one fixed (F, n_max²) matrix, so decoding is a matrix product. Hermiticity
``B_ij(R) = B_ji(−R)^T`` is exact: the raw blocks of an edge and its reverse are averaged,
``B_e = ½ (B̃_e + B̃_rev(e)^T)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch
from torch import nn as tnn

from hedgenet.graphs.neighbors import edge_vectors
from hedgenet.models._e3nn import nn, o3
from hedgenet.orbitals.layout import OrbitalLayout


class OrbitalBlockDecoder(tnn.Module):
    """Clebsch–Gordan map from the irreps ``self.irreps`` to padded (n_max, n_max) orbital blocks.

    Parameters
    ----------
    layout:
        Shells (angular momenta, in order) of every element.
    elements:
        Atomic numbers the model knows (sorted); species index = position in this list.
    """

    def __init__(self, layout: OrbitalLayout, elements: Sequence[int]):
        super().__init__()
        self.elements = tuple(sorted(int(z) for z in elements))
        shells = [layout.shells_of(z) for z in self.elements]
        self.n_max = max(sum(2 * l + 1 for l in sh) for sh in shells)
        n_sp = len(self.elements)

        # (l1, l2) -> how many channels k are needed (max over ordered species pairs)
        count: dict[tuple[int, int], int] = defaultdict(int)
        for a in range(n_sp):
            for b in range(n_sp):
                c: dict[tuple[int, int], int] = defaultdict(int)
                for l1 in shells[a]:
                    for l2 in shells[b]:
                        c[(l1, l2)] += 1
                for key, n in c.items():
                    count[key] = max(count[key], n)
        # irreps: group the (l1, l2, k, L) channels by (L, parity)
        mul: dict[tuple[int, int], int] = defaultdict(int)
        slot: dict[tuple[int, int, int, int], int] = {}
        for (l1, l2), n in sorted(count.items()):
            p = (-1) ** (l1 + l2)
            for k in range(n):
                for L in range(abs(l1 - l2), l1 + l2 + 1):
                    slot[(l1, l2, k, L)] = mul[(L, p)]
                    mul[(L, p)] += 1
        keys = sorted(mul, key=lambda lp: (lp[0], -lp[1]))
        self.irreps = o3.Irreps([(mul[lp], lp) for lp in keys])
        offset, start = {}, 0
        for (m, ir) in self.irreps:
            offset[(ir.l, ir.p)] = start
            start += m * ir.dim
        dim = self.irreps.dim

        n = self.n_max
        basis = torch.zeros(n_sp, n_sp, dim, n * n, dtype=torch.float64)
        for a in range(n_sp):
            for b in range(n_sp):
                seen: dict[tuple[int, int], int] = defaultdict(int)
                r1 = 0
                for l1 in shells[a]:
                    r2 = 0
                    for l2 in shells[b]:
                        k = seen[(l1, l2)]
                        seen[(l1, l2)] += 1
                        p = (-1) ** (l1 + l2)
                        for L in range(abs(l1 - l2), l1 + l2 + 1):
                            cg = o3.wigner_3j(l1, l2, L, dtype=torch.float64) * math.sqrt(2 * L + 1)
                            f0 = offset[(L, p)] + slot[(l1, l2, k, L)] * (2 * L + 1)
                            for m1 in range(2 * l1 + 1):
                                for m2 in range(2 * l2 + 1):
                                    basis[a, b, f0 : f0 + 2 * L + 1, (r1 + m1) * n + r2 + m2] = cg[m1, m2]
                        r2 += 2 * l2 + 1
                    r1 += 2 * l1 + 1
        # float64 buffers (exact CG coefficients for float64 models), cast to the features' dtype on use
        self.register_buffer("basis", basis, persistent=False)

        # identity-like on-site references: one coefficient per species and unordered same-l shell pair
        ident = []
        for a in range(n_sp):
            starts = [0]
            for l in shells[a]:
                starts.append(starts[-1] + 2 * l + 1)
            for s1, l1 in enumerate(shells[a]):
                for s2, l2 in enumerate(shells[a]):
                    if s2 < s1 or l1 != l2:
                        continue
                    m = torch.zeros(n_sp, n, n, dtype=torch.float64)
                    eye = torch.eye(2 * l1 + 1, dtype=torch.float64)
                    m[a, starts[s1] : starts[s1 + 1], starts[s2] : starts[s2 + 1]] = eye
                    m[a, starts[s2] : starts[s2 + 1], starts[s1] : starts[s1 + 1]] = eye
                    ident.append(m)
        self.register_buffer("onsite_basis", torch.stack(ident), persistent=False)

    def forward(self, x: torch.Tensor, species_i: torch.Tensor, species_j: torch.Tensor) -> torch.Tensor:
        """Blocks (E, ..., n_max, n_max) from irreps features ``x`` (E, ..., irreps.dim) of edges i -> j."""
        n_sp = self.basis.shape[0]
        n = self.n_max
        basis = self.basis.to(x.dtype)
        if n_sp == 1:
            return (x @ basis[0, 0]).unflatten(-1, (n, n))
        pair = species_i * n_sp + species_j
        out = x.new_zeros(*x.shape[:-1], n * n)
        basis = basis.flatten(0, 1)
        for p in torch.unique(pair).tolist():
            idx = (pair == p).nonzero().squeeze(1)
            out = out.index_copy(0, idx, x[idx] @ basis[p])
        return out.unflatten(-1, (n, n))


def uvu_tensor_product(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, irreps_target: o3.Irreps):
    """NequIP/MACE-style 'uvu' tensor product with external (per-edge) weights: every path
    ``irreps_in ⊗ irreps_sh -> ir_out`` whose ``ir_out`` occurs in ``irreps_target``.

    Its output irreps are sorted, so equal irreps are adjacent and the output can be read as
    ``tp.irreps_out.simplify()`` (same memory layout, fewer chunks for the following Linear)."""
    irreps_mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_edge) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_edge:
                if ir_out in irreps_target:
                    instructions.append((i, j, len(irreps_mid), "uvu", True))
                    irreps_mid.append((mul, ir_out))
    irreps_mid = o3.Irreps(irreps_mid)
    irreps_mid, perm, _ = irreps_mid.sort()
    instructions = [(i1, i2, perm[k], mode, train) for i1, i2, k, mode, train in instructions]
    return o3.TensorProduct(
        irreps_in, irreps_sh, irreps_mid, instructions, shared_weights=False, internal_weights=False
    )


class RadialBasis(tnn.Module):
    """Bessel basis √(2/r_c) sin(nπ d/r_c)/d, n = 1..num_basis, times the polynomial cutoff envelope
    (MACE/NequIP, p = 6) that takes it smoothly to zero at the cutoff r_c (Å)."""

    def __init__(self, cutoff: float, num_basis: int = 8, p: int = 6):
        super().__init__()
        self.cutoff, self.p = float(cutoff), int(p)
        self.register_buffer("freq", torch.arange(1, num_basis + 1) * math.pi / self.cutoff)

    def envelope(self, d: torch.Tensor) -> torch.Tensor:
        x, p = d / self.cutoff, self.p
        env = (
            1.0
            - (p + 1) * (p + 2) / 2 * x**p
            + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2)
        )
        return env * (x < 1.0)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        d = d.unsqueeze(-1)
        bessel = math.sqrt(2.0 / self.cutoff) * torch.sin(self.freq.to(d.dtype) * d) / d
        return bessel * self.envelope(d)


class OnsitePairSum(tnn.Module):
    """Environment-dependent on-site energies as a sum over neighbours: per atom i the coefficients
    c_i = Σ_t Σ_{j ∈ N_t(i)} W^t_{Z_i Z_j} · B_t(r_ij) of the identity-like on-site basis (one number per target
    and same-l shell pair), over the message-passing neighbours N_t of every relation type t (intra- and
    interlayer, each its own weights), B_t the Bessel basis with the smooth cutoff of that relation
    (:class:`RadialBasis`). It is the form of a tight-binding method's environment-dependent self-energies
    (GFN1-xTB's shift with the coordination number): in GFN1-xTB 92 % of the on-site energies' variance over
    displaced bilayer cells is such a sum. The neighbours are the relation edges, never subsampled. ``W`` starts
    at zero."""

    def __init__(self, n_species: int, cutoffs, num_basis: int, n_out: int):
        super().__init__()
        self.n_species = int(n_species)
        self.radial = tnn.ModuleList([RadialBasis(float(c), num_basis) for c in cutoffs])
        self.weight = tnn.Parameter(torch.zeros(len(self.radial), n_species * n_species, num_basis, n_out))

    def forward(self, edges, species: torch.Tensor) -> torch.Tensor:
        """(N, n_out) from ``edges``: per relation type ``[index (2, E), r_ij (E, 3) Å, ...]``."""
        out = self.weight.new_zeros(species.shape[0], self.weight.shape[-1])
        for t, (index, vec, *_) in enumerate(edges):
            i, j = index
            pair = species[i] * self.n_species + species[j]
            term = torch.einsum("eb,ebo->eo", self.radial[t](vec.norm(dim=1)).to(out.dtype), self.weight[t][pair])
            out = out.index_add(0, i, term)
        return out


class BlockHeadBase(tnn.Module):
    """What every block head shares with :func:`finish_blocks` and :func:`init_block_statistics`: a
    ``decoder`` (:class:`OrbitalBlockDecoder`), ``onsite_coef`` (n_targets, n_onsite_basis), ``scale``
    (n_targets,) and ``targets``; subclasses set them in ``__init__``."""

    @property
    def n_max(self) -> int:
        return self.decoder.n_max

    def onsite_reference(self) -> torch.Tensor:
        """(n_targets, n_species, n_max, n_max) identity-like on-site blocks added to every self edge."""
        basis = self.decoder.onsite_basis.to(self.onsite_coef.dtype)
        return torch.einsum("tc,cskl->tskl", self.onsite_coef, basis)


class BlockHead(BlockHeadBase):
    """Orbital blocks of several targets (H in eV and S) for every block edge (i, j, R), self edges
    included, from one shared trunk.

    Off-site (i ≠ j or R ≠ 0): pair features ``x_ij = A h_i + B h_j + W (C h_i ⊙ D h_j)``
    (``⊙`` the channel-wise tensor product) are coupled to the spherical harmonics of r_ij by a 'uvu'
    tensor product whose weights come from a radial MLP of the Bessel basis (cutoff ``block_cutoff``,
    Å), then mapped linearly to the block irreps of every target (one output map per target).
    On-site (i, i, 0): ``A' h_i + FCTP(C' h_i, D' h_i)`` -> block irreps of every target, plus a learnable
    identity-like reference per target, species and same-l shell pair (``onsite_coef``, rotation
    invariant). Blocks are decoded by :class:`OrbitalBlockDecoder`, multiplied by the per-target
    ``scale`` and symmetrised. ``channels`` caps the multiplicity of the pair features (A..D map the node
    irreps onto it). Several targets share the per-edge trunk (one output map each); HedgeNet uses it
    for H, while S, a two-center quantity, has its own :class:`TwoCenterHead`.
    """

    def __init__(
        self,
        irreps_node: o3.Irreps,
        layout: OrbitalLayout,
        elements: Sequence[int],
        block_cutoff: float,
        targets: Sequence[str] = ("H", "S"),
        num_basis: int = 8,
        radial_hidden: int = 32,
        channels: int | None = None,
    ):
        super().__init__()
        self.targets = tuple(targets)
        k = len(self.targets)
        self.decoder = OrbitalBlockDecoder(layout, elements)
        irreps_node = o3.Irreps(irreps_node)
        # pair features live in a (possibly narrower) copy of the node irreps: the head runs per edge
        mid = o3.Irreps([(min(mul, channels) if channels else mul, ir) for mul, ir in irreps_node])
        out = self.decoder.irreps
        out_all = o3.Irreps(list(out) * k)  # target t's features: columns [t*dim, (t+1)*dim)
        l_max = max(ir.l for _, ir in out)
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.radial = RadialBasis(block_cutoff, num_basis)
        # off-site pair features
        self.lin_i = o3.Linear(irreps_node, mid)
        self.lin_j = o3.Linear(irreps_node, mid)
        self.lin_pi = o3.Linear(irreps_node, mid)
        self.lin_pj = o3.Linear(irreps_node, mid)
        self.prod = o3.ElementwiseTensorProduct(mid, mid)
        self.lin_prod = o3.Linear(self.prod.irreps_out, mid)
        self.tp = uvu_tensor_product(mid, self.irreps_sh, out)
        self.weights = nn.FullyConnectedNet(
            [num_basis, radial_hidden, radial_hidden, self.tp.weight_numel], torch.nn.functional.silu
        )
        self.lin_out = o3.Linear(self.tp.irreps_out.simplify(), out_all)
        # on-site
        self.lin_on = o3.Linear(irreps_node, out_all)
        self.lin_on_a = o3.Linear(irreps_node, mid)
        self.lin_on_b = o3.Linear(irreps_node, mid)
        self.tp_on = o3.FullyConnectedTensorProduct(mid, mid, out_all)
        self.onsite_coef = tnn.Parameter(torch.zeros(k, self.decoder.onsite_basis.shape[0]))
        self.register_buffer("scale", torch.ones(k))
        self.chunk_size = 32768  # off-site block edges per chunk (memory bound, not a hyperparameter)

    def forward(
        self,
        h: torch.Tensor,
        species: torch.Tensor,
        pos: torch.Tensor,
        cell_of_atom: torch.Tensor,
        index: torch.Tensor,
        shift: torch.Tensor,
        reverse: torch.Tensor,
        onsite_coef: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{target: blocks (E, n_max, n_max)}`` of the block edges ``index`` (2, E), ``shift`` (E, 3)
        (R, lattice units), ``reverse`` (E,) the index of each edge's reverse; ``cell_of_atom`` (N, 3, 3) Å.
        ``onsite_coef`` (N, n_targets · n_onsite_basis): per-atom coefficients of the identity-like on-site basis
        added to the self edges (:class:`OnsitePairSum`)."""
        i, j = index
        k, dim = len(self.targets), self.decoder.irreps.dim
        onsite = (i == j) & (shift == 0).all(dim=1)
        on = onsite.nonzero().squeeze(1)
        off = (~onsite).nonzero().squeeze(1)
        feats = h.new_zeros(i.shape[0], k * dim)
        if off.numel():
            hi, hj, hpi, hpj = self.lin_i(h), self.lin_j(h), self.lin_pi(h), self.lin_pj(h)
            # chunks bound the per-edge intermediates (~600 numbers per edge) on 10^5-10^6 block edges
            for sel in off.split(self.chunk_size):
                io, jo = i[sel], j[sel]
                vec = edge_vectors(pos, io, jo, shift[sel], cell_of_atom)
                x = hi[io] + hj[jo] + self.lin_prod(self.prod(hpi[io], hpj[jo]))
                y = self.tp(x, self.sh(vec), self.weights(self.radial(vec.norm(dim=1))))
                feats = feats.index_copy(0, sel, self.lin_out(y))
        if on.numel():
            ho = h[i[on]]
            onsite_feats = self.lin_on(ho) + self.tp_on(self.lin_on_a(ho), self.lin_on_b(ho))
            feats = feats.index_copy(0, on, onsite_feats)
        onsite_extra = None
        if onsite_coef is not None and on.numel():  # (E_on, k, n, n): per-atom coefficients on the on-site basis
            a = i[on]
            basis = self.decoder.onsite_basis.to(onsite_coef.dtype)[:, species[a]]  # (c, E_on, n, n)
            onsite_extra = torch.einsum("etc,cekl->etkl", onsite_coef[a].view(a.shape[0], k, -1), basis)
        return finish_blocks(self, feats.view(-1, k, dim), species, index, on, reverse, onsite_extra)


def finish_blocks(head, feats: torch.Tensor, species: torch.Tensor, index: torch.Tensor, on: torch.Tensor,
                  reverse: torch.Tensor, onsite_extra: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The last steps every block head shares: decode block irreps ``feats`` (E, n_targets, dim) by
    Clebsch–Gordan coefficients, multiply by ``head.scale`` (per target), add the identity-like on-site
    reference ``head.onsite_reference()`` to the self edges ``on`` and symmetrise,
    ``B_e = ½ (B̃_e + B̃_rev(e)^T)``. Returns ``{target: blocks (E, n_max, n_max)}``."""
    i, j = index
    blocks = head.decoder(feats, species[i], species[j])  # (E, k, n, n)
    blocks = blocks * head.scale.to(blocks.dtype)[:, None, None]
    if on.numel():
        ref = head.onsite_reference().to(blocks.dtype)[:, species[i[on]]].transpose(0, 1)
        if onsite_extra is not None:  # (E_on, k, n, n), e.g. :class:`OnsitePairSum`'s, in the target's units
            ref = ref + onsite_extra.to(blocks.dtype)
        blocks = blocks.index_add(0, on, ref)
    blocks = 0.5 * (blocks + blocks[reverse].transpose(-1, -2))
    return {t: blocks[:, n] for n, t in enumerate(head.targets)}


@torch.no_grad()
def init_block_statistics(heads, graphs, n_species: int, hamiltonian_shift_eV: float = 0.0) -> dict:
    """Data-dependent constants of block heads from training graphs: for every ``(head, t, key)`` in
    ``heads`` (target ``t`` of ``head`` predicts ``graph.<key>``, ``H`` or ``S``; for ``H`` with a
    ``hamiltonian_shift_eV`` E, H − E·S, what the head then predicts), the identity-like on-site reference
    (mean on-site blocks per species projected on ``head.decoder.onsite_basis``, into ``head.onsite_coef[t]``)
    and the output scale (RMS of the remaining block elements, eV for H, into ``head.scale[t]``). Heads whose
    key some graph lacks are skipped. Returns ``{f"{key}_scale": rms}``."""
    stats = {}

    def target(g, key):
        if key == "H" and hamiltonian_shift_eV:
            return g.H - hamiltonian_shift_eV * g.S
        return getattr(g, key)

    for head, t, key in heads:
        if not graphs or not all(getattr(g, key) is not None for g in graphs):
            continue
        basis = head.decoder.onsite_basis.detach().double().cpu()  # (C, S, n, n)
        sums = torch.zeros(n_species, head.n_max, head.n_max, dtype=torch.float64)
        cnt = torch.zeros(n_species, dtype=torch.float64)
        for g in graphs:
            i = g.block_index[0]
            on = g.block_kind == 0
            sums.index_add_(0, g.species[i[on]], target(g, key)[on].double())
            cnt.index_add_(0, g.species[i[on]], torch.ones(int(on.sum()), dtype=torch.float64))
        mean = sums / cnt.clamp(min=1)[:, None, None]
        coef = torch.einsum("cskl,skl->c", basis, mean) / basis.pow(2).sum((1, 2, 3))
        head.onsite_coef[t].copy_(coef)
        ref = torch.einsum("c,cskl->skl", coef, basis)
        sq, n = 0.0, 0
        for g in graphs:
            i = g.block_index[0]
            r = target(g, key).double().clone()
            on = g.block_kind == 0
            r[on] -= ref[g.species[i[on]]]
            sq += float(r[g.block_mask].pow(2).sum())
            n += int(g.block_mask.sum())
        rms = (sq / max(n, 1)) ** 0.5
        head.scale[t] = max(rms, 1e-6)
        stats[f"{key}_scale"] = rms
    return stats


class GaussianBasis(tnn.Module):
    """Gaussians exp(−(d − μ_k)²/2w²) on [0, cutoff] (Å), no envelope: for two-center quantities that are
    still finite at the block cutoff (there the block list itself ends)."""

    def __init__(self, cutoff: float, num_basis: int = 16):
        super().__init__()
        self.register_buffer("centers", torch.linspace(0.0, float(cutoff), num_basis))
        self.width = float(cutoff) / (num_basis - 1)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * ((d.unsqueeze(-1) - self.centers.to(d.dtype)) / self.width) ** 2)


class TwoCenterHead(BlockHeadBase):
    """Overlap blocks S_ij(R) as the two-center integrals they are: functions of the species pair and of
    r_ij only, with no dependence on the environment.

    For shells (l1, l2) only the irreps L of parity (−1)^(l1+l2) = (−1)^L occur (the bond direction is the
    only vector), each as ``c(Z_i, Z_j, |r_ij|) Y_L(r̂_ij)`` with c from a radial MLP (Gaussian basis,
    ``num_basis`` functions on [0, block_cutoff] Å); on-site blocks are one learnable identity-like constant
    per species (exactly what orthonormal-within-an-atom orbitals need). Decoded like :class:`BlockHead`
    and symmetrised, so S_ij(R) = S_ji(−R)ᵀ exactly. Cheap: no tensor product, no node features.
    """

    def __init__(self, layout: OrbitalLayout, elements: Sequence[int], block_cutoff: float, num_basis: int = 16,
                 radial_hidden: int = 32):
        super().__init__()
        self.targets = ("S",)
        self.decoder = OrbitalBlockDecoder(layout, elements)
        n_sp = len(self.decoder.elements)
        irreps = self.decoder.irreps
        l_max = max(ir.l for _, ir in irreps)
        self.irreps_sh = o3.Irreps.spherical_harmonics(l_max)
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        feat_index, sh_index, coef_index = [], [], []
        offset, n_coef = 0, 0
        for mul, ir in irreps:
            if ir.p == (-1) ** ir.l:  # allowed for a two-center integral
                for u in range(mul):
                    for m in range(2 * ir.l + 1):
                        feat_index.append(offset + u * (2 * ir.l + 1) + m)
                        sh_index.append(ir.l**2 + m)
                        coef_index.append(n_coef + u)
                n_coef += mul
            offset += mul * ir.dim
        self.register_buffer("feat_index", torch.tensor(feat_index), persistent=False)
        self.register_buffer("sh_index", torch.tensor(sh_index), persistent=False)
        self.register_buffer("coef_index", torch.tensor(coef_index), persistent=False)
        self.n_coef = n_coef
        self.radial = GaussianBasis(block_cutoff, num_basis)
        self.mlp = nn.FullyConnectedNet([num_basis, radial_hidden, radial_hidden, n_sp * n_sp * n_coef],
                                        torch.nn.functional.silu)
        # until init_statistics sets them from data: unit on-site overlap, small off-site overlaps (S > 0)
        self.onsite_coef = tnn.Parameter(torch.ones(1, self.decoder.onsite_basis.shape[0]))
        self.register_buffer("scale", torch.full((1,), 0.01))

    def forward(self, h, species, pos, cell_of_atom, index, shift, reverse) -> dict[str, torch.Tensor]:
        """``{"S": blocks (E, n_max, n_max)}``; same arguments as :meth:`BlockHead.forward` (``h`` unused)."""
        i, j = index
        n_sp = len(self.decoder.elements)
        onsite = (i == j) & (shift == 0).all(dim=1)
        off = (~onsite).nonzero().squeeze(1)
        on = onsite.nonzero().squeeze(1)
        feats = pos.new_zeros(i.shape[0], self.decoder.irreps.dim)
        if off.numel():
            io, jo = i[off], j[off]
            vec = edge_vectors(pos, io, jo, shift[off], cell_of_atom)
            coef = self.mlp(self.radial(vec.norm(dim=1))).view(-1, n_sp * n_sp, self.n_coef)
            coef = coef[torch.arange(off.numel(), device=coef.device), species[io] * n_sp + species[jo]]
            y = self.sh(vec)
            vals = coef[:, self.coef_index] * y[:, self.sh_index]
            f_off = pos.new_zeros(off.numel(), feats.shape[1]).index_copy(1, self.feat_index, vals)
            feats = feats.index_copy(0, off, f_off)
        return finish_blocks(self, feats.unsqueeze(1), species, index, on, reverse)
