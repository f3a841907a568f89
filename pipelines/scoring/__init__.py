"""Numbers from logits: score files, accuracy metrics and the learned fusion weights. It may import
``pipelines.core`` and ``pipelines.data`` (and ``flow``), never a network or a stage."""
