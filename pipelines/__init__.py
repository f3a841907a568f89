"""Datasets, scoring, inference, reports and the staged jobs, in subpackages whose imports run one way.

From the bottom up: ``core`` (config, manifests, streams, locks, devices, checkpoints), ``data`` (splits, synthetic
data, clips), ``scoring`` (score files, metrics, fusion weights), ``inference`` (trained networks applied to videos),
``report`` (tables, figures, the HTML report) and ``stages`` (train, evaluate, fuse, run, demo, predict, export),
with ``detection`` (temporal action detection: its data, detectors, stages and report) beside ``stages``. A
subpackage imports only those below it, and ``stages`` and ``detection`` not each other; the contracts in
``pyproject.toml`` (``lint-imports``) hold this.
"""
