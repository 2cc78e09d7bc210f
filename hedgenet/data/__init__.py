"""Datasets: displacement sampling, HDF5 store, labelling, DeepH folder format."""
