"""hedgenet: machine-learned electron-phonon interactions from finite differences (MLEPI + HedgeNet)."""

__version__ = "0.1.0"
