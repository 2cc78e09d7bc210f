"""Baselines trained on the same data, losses, metrics and trainer as HedgeNet:

* :mod:`hedgenet.models.baselines.mace`: ``model=mace``, the real mace-torch ``ScaleShiftMACE`` behind
  an adapter (energies, forces, force constants);
* :mod:`hedgenet.models.baselines.deeph_e3`: ``model=deeph_e3``, an E(3)-equivariant Hamiltonian network
  on a homogeneous graph with node and edge updates in the style of DeepH-E3.

The homogeneous-graph ablation of HedgeNet itself is ``relations=single``. The modules are imported
lazily (mace-torch is an optional dependency), through :data:`hedgenet.models.io.BUILDERS`.
"""
