"""Collect each benchmark's figures; print its table; write ``results.json`` and ``RESULTS.md``.

Every section contributes the full figures (JSON) and a few headline rows. A row shows the best
and median of its repetitions (for times the best is the minimum, for rates the maximum), the
repetition count, and the target from the performance issue where there is one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from btxrd.runtime.output.atomic import write_text

SCHEMA_VERSION = 1


def row(
    what: str,
    figure: dict[str, Any] | float | int | str | None,
    *,
    unit: str | None = None,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """A table row from a ``Stats.to_json()`` / ``Stats.rate()`` dict, a ratio dict or a scalar."""
    best = median = reps = None
    if isinstance(figure, dict):
        # Times: min; rates: best; ratios (``timing.ratio``): the ratio of the minima.
        best = figure.get("best", figure.get("min"))
        median = figure.get("median")
        reps = figure.get("reps")
        unit = unit or figure.get("unit")
        if figure.get("paired_median") is not None:
            paired = f"paired {figure['paired_median']}"
            note = f"{note}; {paired}" if note else paired
    else:
        best = figure
    return {
        "what": what,
        "best": best,
        "median": median,
        "reps": reps,
        "unit": unit or "",
        "target": target,
        "met": met,
        "note": note,
    }


class Report:
    def __init__(
        self,
        out_dir: Path,
        header: dict[str, Any],
        previous: dict[str, Any] | None = None,
        order: tuple[str, ...] = (),
    ) -> None:
        """``previous``: an earlier ``results.json`` whose sections are kept unless run again;
        ``order``: the order of sections in the files."""
        self.out_dir = out_dir
        self.header = header
        self.order = order
        self.sections: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, list[dict[str, Any]]] = dict((previous or {}).get("table", {}))
        for name, figures in (previous or {}).get("sections", {}).items():
            self.sections[name] = {**_stamp_of(previous or {}), **figures}
        self.started = time.time()

    @staticmethod
    def previous(out_dir: Path) -> dict[str, Any] | None:
        """The ``results.json`` already in ``out_dir``, if any."""
        path = out_dir / "results.json"
        if not path.is_file():
            return None
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"{path}: schema version {document.get('schema_version')}, not ours")
        return document

    def add(self, name: str, figures: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        self.sections[name] = figures
        self.rows[name] = rows
        print_table(name, rows)
        self.save()

    def fail(self, name: str, error: str) -> None:
        self.sections[name] = {"error": error}
        self.rows[name] = [row("FAILED", None, note=error.splitlines()[0][:160])]
        print_table(name, self.rows[name])
        self.save()

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        document = {
            "schema_version": SCHEMA_VERSION,
            **self.header,
            "wall_seconds": round(time.time() - self.started, 1),
            "sections": self._ordered(self.sections),
            "table": self._ordered(self.rows),
        }
        write_text(self.out_dir / "results.json", json.dumps(document, indent=2) + "\n")
        write_text(self.out_dir / "RESULTS.md", self.markdown(document))

    def markdown(self, document: dict[str, Any]) -> str:
        machine = document["machine"]
        model = document["model"]
        lines = [
            "# btxrd benchmark results",
            "",
            f"Written by `{_command_of(document)}` on {document['date']}; full figures in "
            "`results.json`.",
            "",
            f"- Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, "
            f"{machine['memory_gb']} GB; flags {', '.join(machine['cpu_flags']) or 'none'}",
            f"- Load average at start / end: {machine['load_average_at_start'][0]:.2f} / "
            f"{document.get('load_average_at_end', ['?'])[0]}",
            "- Libraries: "
            + ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v is not None),
            f"- Model: `{_relative(model['onnx'])}` ({model['note']})",
            f"- btxrd-run from: `{_relative(document['run_venv'])}`",
            "",
        ]
        if document.get("warning"):
            lines += [f"> **{document['warning']}**", ""]
        # Sections kept from an earlier run (--update) may come from another time or machine.
        stamp = _stamp_of(document)
        measured = []
        for name, figures in document["sections"].items():
            when = {**stamp, **{k: v for k, v in figures.items() if k in stamp}}
            measured.append(
                f"{name} {when['measured_at']} ({when['machine']}, load "
                f"{when['load_average_at_end']})"
            )
        lines += [
            "Sections measured (1-minute load average at the end): " + "; ".join(measured) + ".",
            "",
        ]
        lines += [
            "Best is the minimum for times and the maximum for rates; a ratio's best is the ratio "
            "of the best times and its median the ratio of the medians; 'paired' is the median of "
            "per-round ratios. Every pair was measured interleaved in this run; targets are "
            "judged on medians.",
            "",
            "| Section | Figure | Best | Median | Reps | Unit | Target | Met | Note |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for section, rows in document["table"].items():
            for r in rows:
                met = {True: "yes", False: "**no**", None: ""}[r["met"]]
                cells = [
                    section,
                    r["what"],
                    _fmt(r["best"]),
                    _fmt(r["median"]),
                    _fmt(r["reps"]),
                    r["unit"],
                    r["target"],
                    met,
                    r["note"],
                ]
                lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"

    def _ordered(self, by_section: dict[str, Any]) -> dict[str, Any]:
        known = [name for name in self.order if name in by_section]
        return {name: by_section[name] for name in known + sorted(set(by_section) - set(known))}


def _command_of(document: dict[str, Any]) -> str:
    default = f"python bench/run.py{' --quick' if document['quick'] else ''}"
    return str(document.get("command", default))


def _stamp_of(document: dict[str, Any]) -> dict[str, Any]:
    """When and where a whole run measured its sections (for sections that do not say)."""
    machine = document.get("machine", {})
    return {
        "measured_at": document.get("date"),
        "machine": f"{machine.get('cpu_model', '?')}, {machine.get('usable_cpus', '?')} CPUs",
        "load_average_at_end": document.get("load_average_at_end", ["?"])[0],
    }


def print_table(section: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n== {section}")
    for r in rows:
        met = {True: "  [met]", False: "  [MISSED]", None: ""}[r["met"]]
        value = _fmt(r["best"])
        if r["median"] is not None:
            reps = f", n={r['reps']}" if r["reps"] is not None else ""
            value += f" (median {_fmt(r['median'])}{reps})"
        target = f"  target {r['target']}" if r["target"] else ""
        note = f"  -- {r['note']}" if r["note"] else ""
        print(f"  {r['what']:<52} {value} {r['unit']}{target}{met}{note}")
    sys.stdout.flush()


def _relative(path: str) -> str:
    root = str(Path(__file__).resolve().parent.parent) + "/"
    return path[len(root) :] if path.startswith(root) else path


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0 or 0.001 <= abs(value) < 10_000:
            return f"{value:.4g}"
        return f"{value:.3g}"
    return str(value)
