"""Labelled videos as tensors and segments: split files and the validation subset, the synthetic datasets (trimmed
clips and untrimmed videos for detection), temporal annotations (THUMOS'14 folders, ActivityNet JSON) and the clip
datasets read from a flow store. It may import ``pipelines.core``, ``mars_sta`` and ``flow``."""
