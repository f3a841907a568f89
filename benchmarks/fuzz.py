"""Fuzz every parser a user's file reaches with many more inputs than the test suite, and print the counts.

    python benchmarks/fuzz.py [--examples 10000] [--parser NAME ...]

Uses the strategies and parsers of ``tests/test_fuzz.py``. Per parser: inputs tried, how many parsed, how many were
refused with the input error, how many raised anything else (must be 0; the first few are printed in full), and
the slowest input's time. Timings depend on the machine: they are reported, not asserted.
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test_fuzz  # noqa: E402 - after the path is set


@dataclass
class Counts:
    inputs: int = 0
    parsed: int = 0
    refused: int = 0
    other: int = 0
    slowest: float = 0.0
    slowest_input: str = ""
    examples: list[str] = field(default_factory=list)


def fuzz(parser: test_fuzz.Parser, examples: int) -> Counts:
    """Run ``parser`` on ``examples`` generated inputs, counting outcomes instead of stopping at the first bug."""
    counts = Counts()
    allowed = parser.allowed()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(parser.strategy)
    def run(value: Any) -> None:
        started = time.perf_counter()
        try:
            parser.parse(value)
            counts.parsed += 1
        except allowed as exc:
            counts.refused += 1
            if len(str(exc).splitlines()) > 1:
                counts.other += 1
                counts.examples.append(f"multi-line message for {value!r}: {str(exc)!r}")
        except Exception:  # noqa: BLE001 - what the fuzzer is looking for
            counts.other += 1
            if len(counts.examples) < 3:
                counts.examples.append(f"{value!r:.300}\n{traceback.format_exc(limit=-3)}")
        seconds = time.perf_counter() - started
        counts.inputs += 1
        if seconds > counts.slowest:
            counts.slowest, counts.slowest_input = seconds, f"{value!r:.120}"

    run()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per parser")
    parser.add_argument("--parser", action="append", choices=list(test_fuzz.BY_NAME), help="only these parsers")
    args = parser.parse_args()
    test_fuzz.config_classes()
    test_fuzz.parse_pretrained_payload({})  # imports and the model built once, outside the timings
    test_fuzz.fixed_truths()
    print(f"{'parser':<22} {'inputs':>7} {'parsed':>7} {'refused':>7} {'other':>6} {'slowest s':>10}  slowest input")
    total_other = 0
    started = time.perf_counter()
    for name in args.parser or list(test_fuzz.BY_NAME):
        counts = fuzz(test_fuzz.BY_NAME[name], args.examples)
        total_other += counts.other
        print(f"{name:<22} {counts.inputs:>7} {counts.parsed:>7} {counts.refused:>7} {counts.other:>6} "
              f"{counts.slowest:>10.3f}  {counts.slowest_input}", flush=True)
        for text in counts.examples:
            print("    " + text.replace("\n", "\n    "))
    print(f"exceptions other than the input error: {total_other}; {time.perf_counter() - started:.0f} s in all")
    sys.exit(1 if total_other else 0)


if __name__ == "__main__":
    main()
