"""The ``mars-sta`` command line (Click)."""
