"""The explainer's JSON (btxrd-explain images --json, metrics.json, annotation_report.json) is
valid against the same results schema as btxrd-run's."""

from __future__ import annotations

import json

from click.testing import CliRunner
from schema_check import assert_valid


def test_report_files_follow_the_schema(report_run) -> None:
    assert_valid(json.loads((report_run.out / "metrics.json").read_text()), "metrics_document")
    annotations = json.loads((report_run.out / "annotation_report.json").read_text())
    assert_valid(annotations, "annotation_document")


def test_images_json_follows_the_schema(synth_data, tiny_checkpoint, tmp_path) -> None:
    from btxrd.explain.cli import main

    images = sorted((synth_data / "images").iterdir())[:2]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    args = ["images", *images, broken, "--checkpoint", tiny_checkpoint, "--out", tmp_path]
    result = CliRunner().invoke(main, [*map(str, args), "--json", "-q"])
    document = json.loads(result.stdout)
    assert_valid(document, "results_document")
    assert [r["display_name"] for r in document["results"]][-1] == "broken.png"
