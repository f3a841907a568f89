"""What a person reads: the run folder as written by the stages, the fusion tables (``report.md``), the figures,
the HTML run report, and the detection summary (``detection/report.json``) with its pages. It reads files and asks
``inference`` for attention weights; it may import ``core``, ``data``, ``scoring`` and ``inference``, never a stage
or a detector."""
