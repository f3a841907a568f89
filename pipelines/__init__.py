"""Datasets, the clip loader and the staged jobs: train, evaluate, fuse, run, demo."""
