"""``mars-sta demo``: the whole pipeline on the embedded synthetic dataset, ending with the fused top-1 table.

The demo checks what the paper's ordering predicts on this data, for whatever seed is given: Flow > RGB,
MARS > RGB, and MARS+RGB+Flow at least as good as every single stream. STA-MARS against MARS is reported, not gated
(on data this small the two differ by about the standard error).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from pipelines.report.fused_report import ReportRow
from pipelines.report.tables import format_top1_table
from pipelines.stages.run import load_plan, run

DEMO_CONFIG = "demo.toml"


def demo_config_path() -> Path:
    """``configs/demo.toml`` of a source checkout, or the copy installed with the package's data files."""
    return packaged_config(DEMO_CONFIG)


def packaged_config(name: str) -> Path:
    """``configs/<name>`` of a source checkout, or the copy installed with the package's data files."""
    import sys

    for candidate in (Path(__file__).resolve().parents[2] / "configs" / name,
                      Path(sys.prefix) / "share" / "mars-sta" / "configs" / name):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{name} not found beside the package; pass --config")


def gates(rows: list[ReportRow], split: int | str = 1) -> list[tuple[str, bool, str]]:
    """The demo's checks on one split's report rows: (claim, held, the numbers behind it)."""
    top1 = {row.model: row.top1 for row in rows if row.split == split}
    checks = []
    if {"flow", "rgb"} <= set(top1):
        checks.append(("Flow > RGB", top1["flow"] > top1["rgb"], f"{top1['flow']:.1f} vs {top1['rgb']:.1f}"))
    if {"mars", "rgb"} <= set(top1):
        checks.append(("MARS > RGB", top1["mars"] > top1["rgb"], f"{top1['mars']:.1f} vs {top1['rgb']:.1f}"))
    fused = "mars+rgb+flow"
    singles = [s for s in ("mars", "rgb", "flow") if s in top1]
    if fused in top1:
        best = max(singles, key=lambda s: top1[s])
        checks.append(("MARS+RGB+Flow >= every single stream", top1[fused] >= top1[best],
                       f"{top1[fused]:.1f} vs best single {best} {top1[best]:.1f}"))
    return checks


def run_demo(out: Path, seed: int = 0, config_path: Path | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate, extract, train four streams, evaluate and fuse into ``out``; returns the run result with gates.

    Args:
        out: the folder everything goes into (data, store, trainings, scores, report).
        seed: seed of the synthetic data and of training.
        config_path: another demo config; ``configs/demo.toml`` by default.
        log: receives the progress lines and the table.
    """
    started = time.perf_counter()
    out = Path(out)
    config_path = Path(config_path) if config_path else demo_config_path()
    plan = load_plan(config_path, out, base=out)
    plan.tables.setdefault("synth", {})["seed"] = seed
    plan.tables.setdefault("train", {})["seed"] = seed
    result = run(plan, log=log)
    report = result["report"]
    rows = report.rows if report is not None else []
    if report is not None:
        log("")
        log(format_top1_table(report))
    checks = gates(rows)
    for claim, held, numbers in checks:
        log(f"{'PASS' if held else 'FAIL'}  {claim}: {numbers}")
    sta = {row.model: row.top1 for row in rows if row.split == 1}
    if {"sta-mars", "mars"} <= set(sta):
        log(f"note  STA-MARS vs MARS: {sta['sta-mars']:.1f} vs {sta['mars']:.1f} (not gated: one seed decides "
            "little here; see docs for the spread over seeds)")
    _write_html_report(out, log)
    seconds = time.perf_counter() - started
    log(f"demo finished in {seconds:.0f} s; report: {out / 'fused' / 'report.md'}")
    result.update(gates=[{"claim": c, "held": h, "numbers": n} for c, h, n in checks], seconds=seconds)
    return result


def _write_html_report(out: Path, log: Callable[[str], None]) -> None:
    """The HTML page of the run; without matplotlib the demo still succeeds and says how to get the page."""
    from pipelines.report.figures import ReportUnavailable
    from pipelines.report.run_report import write_run_report

    try:
        log(f"html report: {write_run_report(out, log=log)}")
    except ReportUnavailable as exc:
        log(f"note  no HTML report: {exc}")
