"""The page's downloads: records sent back become the JSON document or the CSV ``btxrd-run``
writes (``report.JsonSink``'s layout, ``report.CsvSink`` itself), so every file btxrd writes
has one schema whichever front end made it."""

from __future__ import annotations

import json
from typing import Any

from btxrd.runtime.model.session import ModelInfo
from btxrd.runtime.output.report import CsvSink, count_outcomes, model_block, results_document


class _CsvText(CsvSink):
    """``CsvSink`` writing into a string instead of a file or stdout."""

    text = ""

    def _write_output(self, text: str) -> None:
        self.text = text


def export_document(records: list[dict[str, Any]], info: ModelInfo, fmt: str) -> str:
    """``records`` as ``fmt`` ("json" or "csv"); ``ValueError``, ``KeyError`` or ``TypeError``
    when they are not records."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TypeError("results must be a list of records")
    if fmt == "csv":
        sink = _CsvText(info, None)
        sink.records = records
        sink.close({})
        return sink.text
    document = results_document(model_block(info), records, count_outcomes(records))
    return json.dumps(document, indent=2) + "\n"
