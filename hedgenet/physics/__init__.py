"""Physics with a calculator (model or reference): Bloch sums and bands, phonons, electron–phonon
couplings dH/du, thermal sampling, unfolding and the Fermi velocity."""
