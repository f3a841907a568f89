"""Datasets, scoring, inference, reports and the staged jobs, in subpackages whose imports run one way.

From the bottom up: ``core`` (config, manifests, streams, locks, devices, checkpoints), ``data`` (splits, synthetic
data, clips), ``scoring`` (score files, metrics, fusion weights), ``inference`` (trained networks applied to videos),
``report`` (tables, figures, the HTML report) and ``stages`` (train, evaluate, fuse, run, demo, predict, export). A
subpackage imports only those below it; the contracts in ``pyproject.toml`` (``lint-imports``) hold this.
"""
