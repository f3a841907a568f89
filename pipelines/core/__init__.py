"""What every stage shares: the config dataclasses, stage manifests and hashes, stream names, folder locks, the
device and distributed helpers, and the checkpoint format. It may import ``mars_sta`` and ``flow``, and no other
part of ``pipelines``."""
