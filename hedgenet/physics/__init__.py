"""Physics from orbital blocks and force constants: Bloch matrices and band energies (more with issue 5)."""
