"""Labelled videos as tensors: split files and the validation subset, the synthetic dataset, and the clip datasets
read from a flow store. It may import ``pipelines.core``, ``mars_sta`` and ``flow``."""
