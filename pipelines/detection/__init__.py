"""Temporal action detection's networks and stages: S-CNN's sliding windows and its proposal, classification and
localization networks, R-C3D end to end or its heads on the feature store, their tests (``detect``), and the
``[detection]`` table of ``run``. Its data (annotations, untrimmed synthetic videos) lives in ``pipelines.data``, its
mAP in ``pipelines.scoring`` and its summary and pages in ``pipelines.report``.

It sits between ``stages`` (whose ``run`` orchestrates its stages) and ``report``, and imports only the layers
below.
"""
