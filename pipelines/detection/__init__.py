"""Temporal action detection: annotations, evaluation, untrimmed synthetic data, the S-CNN-style detector
and R-C3D (end to end, or its heads on the feature store)."""
