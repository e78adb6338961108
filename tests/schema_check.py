"""Validate what btxrd wrote against the one results schema (runtime/schemas/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "runtime" / "schemas" / "results.schema.json"


def assert_valid(document: Any, definition: str, schema: dict | None = None) -> None:
    """``document`` must be a valid ``#/$defs/<definition>`` of the results schema (or of
    ``schema``, a changed copy of it)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = schema or json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}
    )
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
