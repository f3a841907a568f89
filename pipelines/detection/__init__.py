"""Temporal action detection: untrimmed synthetic data, THUMOS'14 and ActivityNet annotations, the ActivityNet and
THUMOS'14 evaluations, and the detectors (the S-CNN-style detector, and R-C3D end to end or its heads on the feature
store) with their stages, demo and report.

It sits beside ``pipelines.stages`` and imports only the layers below (``report``, ``inference``, ``scoring``,
``data``, ``core``), never the recognition stages.
"""
