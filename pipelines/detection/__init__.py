"""Temporal action detection: annotations, evaluation, untrimmed synthetic data and the S-CNN-style detector."""
