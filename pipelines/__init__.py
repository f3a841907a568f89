"""Datasets, scoring, inference, reports and the staged jobs, in subpackages whose imports run one way.

From the bottom up: ``core`` (config, manifests, streams, locks, devices, checkpoints), ``data`` (splits, synthetic
data, temporal annotations, clips), ``scoring`` (score files, metrics, fusion weights, detection mAP),
``inference`` (trained networks applied to videos), ``report`` (tables, figures, the HTML report, the detection
summary), ``detection`` (the temporal detectors and their stages) and ``stages`` (train, evaluate, fuse, run, demo,
predict, export). A subpackage imports only those below it: ``stages`` may use ``detection`` (``run``
orchestrates its stages), never the reverse; the contracts in ``pyproject.toml`` (``lint-imports``) hold this.
"""
