"""Numbers from outputs: score files, accuracy metrics, the learned fusion weights, and detection mAP as
ActivityNet's and THUMOS'14's evaluators compute it. It may import ``pipelines.core`` and ``pipelines.data`` (and
``flow``), never a network or a stage."""
