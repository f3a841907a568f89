"""The detection demo's own pages: ``detection/report.md`` (tables) and, with matplotlib, ``detection/report.html``
(tables and figures), both drawn from ``detection/report.json`` by the report's detection section."""
from __future__ import annotations

from pathlib import Path

from flow.atomic import write_text_atomic
from pipelines.report import figures, html_page
from pipelines.report.detection_section import detection_section, markdown_tables, read_summary


def write_detection_report(demo_dir: Path) -> list[Path]:
    """Write ``report.md`` (and ``report.html`` with figures when matplotlib is there); returns the files written."""
    folder = Path(demo_dir) / "detection"
    summary = read_summary(demo_dir)
    written = [folder / "report.md"]
    write_text_atomic(written[0], markdown_tables(summary))
    try:
        figures.require_matplotlib()
    except figures.ReportUnavailable:
        return written
    images = folder / "report_files"
    images.mkdir(exist_ok=True)

    def embed(figure, name: str, caption: str) -> str:
        return html_page.image(figures.save(figure, images / name), caption, folder)

    written.append(folder / "report.html")
    write_text_atomic(written[1], html_page.page("Temporal action detection", str(Path(demo_dir).resolve()),
                                                 [("Detection", detection_section(summary, embed))]))
    return written
