"""Read and write DeepH-pack's preprocessed folder format (one folder per structure).

Files (as written by DeepH-pack's ``deeph/preprocess`` for OpenMX and ABACUS, and read by DeepH-pack and
DeepH-E3):

* ``lat.dat``            3×3, lattice vectors as **columns**, Å
* ``rlat.dat``           3×3, reciprocal vectors (with the 2π) as columns, 1/Å
* ``site_positions.dat`` 3×N, Cartesian positions as columns, Å
* ``element.dat``        N lines, atomic number per atom
* ``orbital_types.dat``  N lines, the l of every radial shell of the atom, e.g. ``0  0  1  1  2``
* ``R_list.dat``         one lattice translation ``Rx Ry Rz`` per line (those that carry blocks)
* ``info.json``          ``{"isspinful": false, "fermi_level": <eV>, ...}``
* ``hamiltonians.h5`` and ``overlaps.h5``: one dataset per block, key ``"[Rx, Ry, Rz, i, j]"`` with
  1-based atom indices, value the dense (n_orb_i, n_orb_j) block H_ij(R) in eV (S dimensionless)
  between atom i in cell 0 and atom j in cell R.
* ``layer.dat`` (hedgenet extension, optional) one integer layer index per atom.

hedgenet adds ``orbital_order``, ``basis_name`` and ``hedgenet_version`` (and a few counts) to
``info.json``; DeepH ignores keys it does not know.

Orbital order inside a shell
----------------------------
hedgenet's own order is e3nn's (see :mod:`hedgenet.orbitals.layout`): p = (x, y, z),
d = (xz, xy, 3y²−r², yz, z²−x²). The files can be written (and read) in these orders:

``"e3nn"`` (default)
    hedgenet's order, unchanged.
``"deeph"`` (alias ``"openmx"``)
    The order DeepH-pack's preprocessed files are in: the OpenMX order, p = (x, y, z),
    d = (3z²−r², x²−y², xy, xz, yz). Established from DeepH-pack itself: ``openmx_get_data.jl`` writes
    OpenMX's blocks without reordering; ``abacus_get_data.py`` converts ABACUS blocks into this order
    (``OrbAbacus2DeepH``: permutation plus sign flips); and DeepH-pack's ``rotate.py`` as well as
    DeepH-E3's rotation code map it to the Wikipedia real spherical harmonics with the pure permutation
    ``Us_openmx2wiki = {1: eye(3)[[1, 2, 0]], 2: eye(5)[[2, 4, 0, 3, 1]]}`` (no sign changes) before
    applying e3nn Wigner matrices in (y, z, x)-permuted coordinates. All cartesian forms therefore carry
    a + sign. ``tests/test_deeph_format.py`` checks with e3nn that the rotation matrices DeepH builds
    for this order agree with hedgenet's e3nn rotation matrices after our conversion, for l = 1, 2.
``"standard"`` (alias ``"wiki"``)
    Textbook real spherical harmonics, m = −l..l with z as polar axis and no Condon–Shortley sign
    (Wikipedia's table, DeepH's internal "wiki" order): p = (y, z, x), d = (xy, yz, 3z²−r², xz, x²−y²).
    This is also tblite's order.
``"pyscf"``
    PySCF's order: p = (x, y, z), d = (xy, yz, 3z²−r², xz, x²−y²).

Remaining uncertainty: (1) the absolute phases of raw OpenMX orbitals are not re-derived here; this
module follows the all-plus convention that DeepH-pack/DeepH-E3 assume when they rotate blocks, which
is what matters for files consumed by DeepH. (2) f shells (l = 3) are not supported (hedgenet's orbital
conventions stop at l = 2); reading a folder with f shells raises a ValueError. (3) Spinful (SOC)
folders are refused. Folders preprocessed by DeepH-pack carry no ``orbital_order`` key, so
:func:`import_deeph` needs ``orbital_order="deeph"`` for them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ase import Atoms

from hedgenet.orbitals.blocks import BlockSet
from hedgenet.orbitals.layout import OrbitalLayout, shell_transform

__all__ = ["export_deeph", "import_deeph", "deeph_shell_transform", "ORBITAL_ORDERS"]

#: canonical orbital-order names accepted by export/import, with their aliases
ORBITAL_ORDERS = ("e3nn", "deeph", "standard", "pyscf")
_ALIASES = {"openmx": "deeph", "wiki": "standard"}

REQUIRED_FILES = (
    "lat.dat",
    "site_positions.dat",
    "element.dat",
    "orbital_types.dat",
    "info.json",
    "hamiltonians.h5",
    "overlaps.h5",
)

# phi_std = P phi_deeph, with std = (xy, yz, z², xz, x²−y²) and deeph/OpenMX = (z², x²−y², xy, xz, yz).
_P_D_STANDARD_FROM_DEEPH = np.eye(5)[[2, 4, 0, 3, 1]]
# phi_std = P phi_x for p: std = (y, z, x), pyscf/deeph = (x, y, z).
_P_P_STANDARD_FROM_XYZ = np.eye(3)[[1, 2, 0]]


def _canonical_order(order: str) -> str:
    name = _ALIASES.get(str(order).lower(), str(order).lower())
    if name not in ORBITAL_ORDERS:
        raise ValueError(
            f"unknown orbital_order {order!r}; known: {list(ORBITAL_ORDERS)} "
            f"(aliases: {_ALIASES})"
        )
    return name


def deeph_shell_transform(order: str, l: int) -> np.ndarray:
    """Orthogonal (2l+1, 2l+1) ``U`` with ``phi_e3nn = U phi_order`` for one shell of angular momentum l."""
    name = _canonical_order(order)
    if l not in (0, 1, 2):
        raise ValueError(
            f"shells with l={l} are not supported (hedgenet's orbital conventions cover s, p, d only)"
        )
    if name == "e3nn":
        return np.eye(2 * l + 1)
    if name == "pyscf":
        return shell_transform("pyscf", l)
    u_std = shell_transform("pyscf", 2)  # d: phi_e3nn = u_std phi_std (same d order as pyscf)
    if name == "standard":
        return {0: np.eye(1), 1: _P_P_STANDARD_FROM_XYZ.T, 2: u_std}[l]
    # deeph / OpenMX
    return {0: np.eye(1), 1: np.eye(3), 2: u_std @ _P_D_STANDARD_FROM_DEEPH}[l]


def _atom_transform(shells: tuple[int, ...], order: str) -> np.ndarray:
    from scipy.linalg import block_diag

    return block_diag(*[deeph_shell_transform(order, l) for l in shells])


def _hedgenet_version() -> str:
    try:
        from importlib.metadata import version

        return version("hedgenet")
    except Exception:
        import hedgenet

        return str(getattr(hedgenet, "__version__", "unknown"))


def _key(i: int, j: int, r) -> str:
    return f"[{int(r[0])}, {int(r[1])}, {int(r[2])}, {int(i) + 1}, {int(j) + 1}]"


# --------------------------------------------------------------------------------------------- export


def export_deeph(
    folder,
    atoms: Atoms,
    blocks: BlockSet,
    layout: OrbitalLayout,
    fermi_level_eV: float | None = None,
    orbital_order: str = "e3nn",
) -> Path:
    """Write one structure's blocks as a DeepH folder (created if needed); returns its path.

    ``blocks`` are in hedgenet's convention (e3nn order, eV, padded); they are written unpadded,
    (n_orb_i, n_orb_j), in ``orbital_order`` (see the module docstring). ``atoms.arrays["layer"]``, if
    present, goes to ``layer.dat``. Without a Fermi level, ``info.json`` gets ``"fermi_level": 0.0``
    (as DeepH-pack's overlap-only ABACUS path does) and ``"fermi_level_known": false``.
    """
    order = _canonical_order(orbital_order)
    folder = Path(folder)
    numbers = np.asarray(atoms.numbers)
    n_atoms = len(numbers)
    cell = np.asarray(atoms.cell.array, dtype=float)
    if abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(
            "export_deeph: the structure has no full 3D cell (DeepH folders are periodic in 3D); give "
            "the Atoms a cell with vacuum along non-periodic directions"
        )
    n_orb = np.array([layout.n_orb(int(z)) for z in numbers], dtype=np.int64)
    if len(blocks.n_orb) != n_atoms or not np.array_equal(np.asarray(blocks.n_orb), n_orb):
        raise ValueError(
            f"export_deeph: blocks.n_orb ({len(blocks.n_orb)} atoms) does not match the layout's orbital "
            f"counts for the {n_atoms} atoms of the structure"
        )
    for z in set(numbers.tolist()):
        for l in layout.shells_of(int(z)):
            deeph_shell_transform(order, l)  # refuses unsupported l early

    folder.mkdir(parents=True, exist_ok=True)
    fmt = "%.17g"
    np.savetxt(folder / "lat.dat", cell.T, fmt=fmt)
    np.savetxt(folder / "rlat.dat", 2.0 * np.pi * np.linalg.inv(cell), fmt=fmt)
    np.savetxt(folder / "site_positions.dat", np.asarray(atoms.positions, dtype=float).T, fmt=fmt)
    np.savetxt(folder / "element.dat", numbers, fmt="%d")
    with open(folder / "orbital_types.dat", "w") as f:
        for z in numbers:
            f.write("  ".join(str(l) for l in layout.shells_of(int(z))) + "\n")
    if "layer" in atoms.arrays:
        np.savetxt(folder / "layer.dat", np.asarray(atoms.arrays["layer"]).astype(np.int64), fmt="%d")

    edge_index = np.asarray(blocks.edge_index)
    shifts = np.asarray(blocks.cell_shift).astype(np.int64)
    r_list = np.unique(shifts, axis=0) if len(shifts) else np.zeros((0, 3), dtype=np.int64)
    np.savetxt(folder / "R_list.dat", r_list, fmt="%d")

    transforms = {int(z): _atom_transform(layout.shells_of(int(z)), order) for z in set(numbers.tolist())}
    import h5py

    seen: set[str] = set()
    with h5py.File(folder / "hamiltonians.h5", "w") as fh, h5py.File(folder / "overlaps.h5", "w") as fs:
        for e in range(edge_index.shape[1]):
            i, j = int(edge_index[0, e]), int(edge_index[1, e])
            key = _key(i, j, shifts[e])
            if key in seen:
                raise ValueError(f"export_deeph: duplicate block {key} (1-based atoms) in the BlockSet")
            seen.add(key)
            ti, tj = transforms[int(numbers[i])], transforms[int(numbers[j])]
            ni, nj = n_orb[i], n_orb[j]
            h = np.asarray(blocks.H[e, :ni, :nj], dtype=np.float64)
            s = np.asarray(blocks.S[e, :ni, :nj], dtype=np.float64)
            if order != "e3nn":  # M_order = T_i^T M_e3nn T_j
                h = ti.T @ h @ tj
                s = ti.T @ s @ tj
            fh.create_dataset(key, data=h)
            fs.create_dataset(key, data=s)

    info = {
        "nsites": int(n_atoms),
        "isorthogonal": False,
        "isspinful": False,
        "norbits": int(n_orb.sum()),
        "fermi_level": float(fermi_level_eV) if fermi_level_eV is not None else 0.0,
        "fermi_level_known": fermi_level_eV is not None,
        "orbital_order": order,
        "basis_name": layout.basis_name,
        "n_blocks": int(edge_index.shape[1]),
        "hedgenet_version": _hedgenet_version(),
    }
    with open(folder / "info.json", "w") as f:
        json.dump(info, f, indent=2)
    return folder


# --------------------------------------------------------------------------------------------- import


def _loadtxt(path: Path, what: str, **kwargs) -> np.ndarray:
    try:
        return np.loadtxt(path, **kwargs)
    except Exception as err:
        raise ValueError(f"{path}: cannot parse {what}: {err}") from err


def _read_blocks_h5(path: Path) -> dict[tuple[int, int, int, int, int], np.ndarray]:
    import h5py

    out: dict[tuple[int, int, int, int, int], np.ndarray] = {}
    try:
        f = h5py.File(path, "r")
    except Exception as err:
        raise ValueError(f"{path}: cannot open HDF5 file (truncated or corrupt?): {err}") from err
    with f:
        try:
            keys = list(f.keys())
        except Exception as err:
            raise ValueError(f"{path}: cannot list the block datasets (truncated?): {err}") from err
        for key in keys:
            try:
                parsed = json.loads(key)
                if not (isinstance(parsed, list) and len(parsed) == 5 and all(isinstance(v, int) for v in parsed)):
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"{path}: dataset key {key!r} is not of the form '[Rx, Ry, Rz, i, j]' (integers)"
                ) from None
            try:
                val = np.asarray(f[key][()])
            except Exception as err:
                raise ValueError(f"{path}: cannot read dataset {key!r} (truncated?): {err}") from err
            if np.iscomplexobj(val):
                if np.abs(val.imag).max(initial=0.0) > 0:
                    raise ValueError(
                        f"{path}: block {key} is complex; spinful / complex Hamiltonians are not supported"
                    )
                val = val.real
            k = tuple(parsed)
            if k in out:
                raise ValueError(f"{path}: block {key} appears twice")
            out[k] = val.astype(np.float64)
    return out


def import_deeph(
    folder,
    orbital_order: str | None = None,
    require_overlaps: bool = True,
) -> tuple[Atoms, BlockSet, OrbitalLayout, dict]:
    """Read a DeepH folder into ``(atoms, blocks, layout, info)`` in hedgenet's convention (e3nn order).

    ``orbital_order`` is the order of the orbitals in the files; by default it is taken from
    ``info.json["orbital_order"]`` (written by :func:`export_deeph`). Folders preprocessed by DeepH-pack
    (OpenMX, ABACUS) do not record it: pass ``orbital_order="deeph"``. ``atoms`` has ``pbc=True`` and
    ``arrays["layer"]`` when ``layer.dat`` exists. Edges are sorted by (i, j, R). The layout's shells per
    element come from ``orbital_types.dat``. ``info`` is ``info.json`` plus ``orbital_order`` (the one
    used), ``fermi_level_eV`` (None if unknown) and counts of blocks present in only one of the h5 files
    (such blocks get zeros in the other matrix). With ``require_overlaps=False`` a missing
    ``overlaps.h5`` gives all-zero S blocks.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"DeepH folder {folder} does not exist or is not a directory")
    required = [f for f in REQUIRED_FILES if require_overlaps or f != "overlaps.h5"]
    missing = [f for f in required if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"DeepH folder {folder} is missing required file(s): {', '.join(missing)}")

    try:
        with open(folder / "info.json") as f:
            info = json.load(f)
    except Exception as err:
        raise ValueError(f"{folder / 'info.json'}: cannot parse JSON: {err}") from err
    if not isinstance(info, dict):
        raise ValueError(f"{folder / 'info.json'}: expected a JSON object")
    if info.get("isspinful", False):
        raise ValueError(f"{folder / 'info.json'}: isspinful is true; spinful folders are not supported")

    file_order = info.get("orbital_order")
    if orbital_order is None:
        if file_order is None:
            raise ValueError(
                f"{folder / 'info.json'} does not record an orbital_order (folder not written by hedgenet);"
                " pass orbital_order explicitly, e.g. orbital_order='deeph' for folders preprocessed by "
                f"DeepH-pack from OpenMX/ABACUS. Known: {list(ORBITAL_ORDERS)}"
            )
        order = _canonical_order(file_order)
    else:
        order = _canonical_order(orbital_order)
        if file_order is not None and _canonical_order(file_order) != order:
            raise ValueError(
                f"orbital_order={orbital_order!r} contradicts {folder / 'info.json'} which records "
                f"orbital_order={file_order!r}"
            )

    # ---- structure
    lat = _loadtxt(folder / "lat.dat", "the lattice", dtype=float, ndmin=2)
    if lat.shape != (3, 3):
        raise ValueError(f"{folder / 'lat.dat'}: expected a 3×3 matrix (vectors as columns), got {lat.shape}")
    if not np.isfinite(lat).all():
        raise ValueError(f"{folder / 'lat.dat'}: the lattice holds NaN or inf ({int((~np.isfinite(lat)).sum())} "
                         "entries). Fix: rewrite lat.dat from the calculation that made the folder")
    if abs(np.linalg.det(lat)) < 1e-6:
        raise ValueError(f"{folder / 'lat.dat'}: the lattice vectors are linearly dependent (zero volume). "
                         "Fix: rewrite lat.dat (3 lattice vectors as columns, Å)")
    cell = lat.T
    pos = _loadtxt(folder / "site_positions.dat", "the positions", dtype=float, ndmin=2)
    if not np.isfinite(pos).all():
        bad = sorted(set(np.argwhere(~np.isfinite(pos))[:, 1].tolist()))
        raise ValueError(f"{folder / 'site_positions.dat'}: positions of atoms {bad[:10]} (0-based columns) are NaN "
                         "or inf. Fix: rewrite site_positions.dat from the calculation that made the folder")
    if pos.shape[0] != 3:
        raise ValueError(
            f"{folder / 'site_positions.dat'}: expected 3 rows (x, y, z; one column per atom), got shape "
            f"{pos.shape}"
        )
    positions = pos.T
    n_atoms = positions.shape[0]
    el = _loadtxt(folder / "element.dat", "the atomic numbers", dtype=float, ndmin=1).ravel()
    if el.shape[0] != n_atoms:
        raise ValueError(
            f"{folder / 'element.dat'} lists {el.shape[0]} atoms but site_positions.dat has {n_atoms}"
        )
    if not np.allclose(el, np.round(el)) or (el < 1).any():
        raise ValueError(f"{folder / 'element.dat'}: atomic numbers must be positive integers")
    numbers = np.round(el).astype(np.int64)

    with open(folder / "orbital_types.dat") as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    if len(lines) != n_atoms:
        raise ValueError(
            f"{folder / 'orbital_types.dat'} has {len(lines)} lines but the structure has {n_atoms} atoms"
        )
    shells: dict[int, tuple[int, ...]] = {}
    for a, (z, ln) in enumerate(zip(numbers, lines)):
        try:
            ls = tuple(int(v) for v in ln.split())
        except ValueError:
            raise ValueError(
                f"{folder / 'orbital_types.dat'} line {a + 1}: expected integers (l of each shell), got {ln!r}"
            ) from None
        if not ls or any(l < 0 for l in ls):
            raise ValueError(f"{folder / 'orbital_types.dat'} line {a + 1}: invalid shells {ln!r}")
        for l in ls:
            if l > 2:
                raise ValueError(
                    f"{folder / 'orbital_types.dat'} line {a + 1}: shell with l={l}; only s, p, d are "
                    "supported"
                )
        if shells.setdefault(int(z), ls) != ls:
            raise ValueError(
                f"{folder / 'orbital_types.dat'} line {a + 1}: atom {a + 1} (Z={z}) has shells {ls} but an "
                f"earlier atom of the same element has {shells[int(z)]}; hedgenet needs one layout per element"
            )
    layout = OrbitalLayout(shells=shells, basis_name=str(info.get("basis_name", "deeph")))

    atoms = Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    if (folder / "layer.dat").is_file():
        layer = _loadtxt(folder / "layer.dat", "the layer indices", dtype=float, ndmin=1).ravel()
        if layer.shape[0] != n_atoms:
            raise ValueError(f"{folder / 'layer.dat'} lists {layer.shape[0]} atoms, the structure has {n_atoms}")
        atoms.arrays["layer"] = np.round(layer).astype(np.int64)

    # ---- blocks
    n_orb = np.array([layout.n_orb(int(z)) for z in numbers], dtype=np.int64)
    Hd = _read_blocks_h5(folder / "hamiltonians.h5")
    have_s = (folder / "overlaps.h5").is_file()
    Sd = _read_blocks_h5(folder / "overlaps.h5") if have_s else {}
    keys = set(Hd) | set(Sd)
    if not keys:
        raise ValueError(f"{folder / 'hamiltonians.h5'}: contains no blocks")
    for name, d in (("hamiltonians.h5", Hd), ("overlaps.h5", Sd)):
        for k, v in d.items():
            i, j = k[3], k[4]
            if not (1 <= i <= n_atoms and 1 <= j <= n_atoms):
                raise ValueError(
                    f"{folder / name}: block {list(k)} refers to an atom outside 1..{n_atoms}"
                )
            want = (int(n_orb[i - 1]), int(n_orb[j - 1]))
            if v.shape != want:
                raise ValueError(
                    f"{folder / name}: block {list(k)} has shape {v.shape}, expected {want} from "
                    "orbital_types.dat"
                )
    missing_rev = sorted(
        k for k in keys if (-k[0], -k[1], -k[2], k[4], k[3]) not in keys
    )
    if missing_rev:
        ex = ", ".join(str(list(k)) for k in missing_rev[:5])
        raise ValueError(
            f"{folder}: {len(missing_rev)} block(s) lack their Hermitian partner [-R, j, i] in "
            f"hamiltonians.h5/overlaps.h5, e.g. {ex}"
        )
    no_onsite = [a + 1 for a in range(n_atoms) if (0, 0, 0, a + 1, a + 1) not in keys]
    if no_onsite:
        raise ValueError(f"{folder}: on-site blocks [0, 0, 0, i, i] missing for atoms {no_onsite[:10]}")

    karr = np.array(sorted(keys, key=lambda k: (k[3], k[4], k[0], k[1], k[2])), dtype=np.int64)
    edge_index = np.stack([karr[:, 3] - 1, karr[:, 4] - 1])
    cell_shift = karr[:, :3].copy()
    E = len(karr)
    n_max = int(n_orb.max())
    H = np.zeros((E, n_max, n_max))
    S = np.zeros((E, n_max, n_max))
    transforms = {int(z): _atom_transform(shells[int(z)], order) for z in shells}
    for e, k in enumerate(map(tuple, karr.tolist())):
        i, j = k[3] - 1, k[4] - 1
        ni, nj = n_orb[i], n_orb[j]
        ti, tj = transforms[int(numbers[i])], transforms[int(numbers[j])]
        for store, d in ((H, Hd), (S, Sd)):
            if k in d:
                m = d[k]
                if order != "e3nn":  # M_e3nn = T_i M_order T_j^T
                    m = ti @ m @ tj.T
                store[e, :ni, :nj] = m
    blocks = BlockSet(edge_index, cell_shift, H, S, n_orb)

    fermi = info.get("fermi_level")
    out_info = dict(info)
    out_info["orbital_order"] = order
    out_info["fermi_level_eV"] = (
        float(fermi) if fermi is not None and info.get("fermi_level_known", True) else None
    )
    out_info["n_blocks_only_in_hamiltonians"] = len(set(Hd) - set(Sd)) if have_s else 0
    out_info["n_blocks_only_in_overlaps"] = len(set(Sd) - set(Hd))
    out_info["has_overlaps"] = have_s
    out_info["folder"] = os.fspath(folder)
    return atoms, blocks, layout, out_info
