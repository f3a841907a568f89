"""What every stage shares: the config dataclasses, stage manifests and hashes, stream names, folder locks, the
device and distributed helpers, the checkpoint format, and the one training loop (``training``): a task supplies
its epoch's micro-batches with their seeds, its loss, what ends an epoch and its checkpoint; the loop does
accumulation, ``no_sync`` under DDP, AMP, logging (JSON lines, TensorBoard), checkpoints and resume for
recognition, S-CNN and R-C3D alike. It may import ``mars_sta`` and ``flow``, and no other
part of ``pipelines``."""
