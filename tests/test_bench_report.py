"""``bench/run.py --update``: a section run again replaces its figures, the others are kept with
when and where they were measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from report import SCHEMA_VERSION, Report, row  # noqa: E402

MACHINE = {
    "cpu_model": "Test CPU",
    "usable_cpus": 2,
    "memory_gb": 1,
    "cpu_flags": [],
    "load_average_at_start": [0.1, 0.1, 0.1],
    "packages": {"btxrd": "0"},
}


def _header(date: str) -> dict:
    return {
        "date": date,
        "quick": False,
        "machine": MACHINE,
        "model": {"onnx": "m.onnx", "note": "test"},
        "run_venv": ".venv-run",
        "warning": "",
        "load_average_at_end": [0.5, 0.5, 0.5],
    }


def test_update_keeps_other_sections_with_their_dates(tmp_path):
    first = Report(tmp_path, _header("2026-01-01T00:00:00"), order=("cold", "memory"))
    first.add("memory", {"peak": 1}, [row("peak RSS", 300.0, unit="MB")])
    first.add("cold", {"start": 1}, [row("start", 0.4, unit="s")])
    previous = Report.previous(tmp_path)
    assert previous is not None and previous["schema_version"] == SCHEMA_VERSION

    again = Report(
        tmp_path, _header("2026-02-02T00:00:00"), previous=previous, order=("cold", "memory")
    )
    again.add("memory", {"peak": 2, "measured_at": "2026-02-02T00:00:09"}, [row("peak", 280.0)])

    document = json.loads((tmp_path / "results.json").read_text())
    assert list(document["sections"]) == ["cold", "memory"]
    assert document["sections"]["memory"]["peak"] == 2
    assert document["sections"]["cold"]["measured_at"] == "2026-01-01T00:00:00"
    assert [r["best"] for r in document["table"]["memory"]] == [280.0]
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert "cold 2026-01-01T00:00:00 (Test CPU, 2 CPUs, load 0.5)" in markdown
    assert "memory 2026-02-02T00:00:09" in markdown
    assert "| cold | start |" in markdown and "| memory | peak |" in markdown


def test_without_update_nothing_is_kept(tmp_path):
    Report(tmp_path, _header("2026-01-01T00:00:00")).add("cold", {}, [row("start", 0.4)])
    fresh = Report(tmp_path, _header("2026-02-02T00:00:00"))
    fresh.add("memory", {}, [row("peak", 280.0)])
    assert list(json.loads((tmp_path / "results.json").read_text())["sections"]) == ["memory"]
