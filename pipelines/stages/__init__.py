"""The jobs a command starts: train, evaluate, fuse, run (all stages in order, the ``[detection]`` ones included),
demo, detection demo, predict and export. Each entry point takes a validated config and writes its outputs with a
manifest. It may import every other subpackage of ``pipelines``; nothing in ``pipelines`` imports it."""
