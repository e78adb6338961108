"""The explainer gives each image the out-of-distribution verdict and calibrated probabilities
``btxrd-run`` gives it, from the ONNX file exported from the checkpoint (the shipped demo pair
here: real checkpoint, real exported gate)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

from schema_check import assert_valid

from btxrd.explain.cli import main as explain
from btxrd.runtime.cli.run import main as run

pytestmark = [pytest.mark.torch, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DEMO_CHECKPOINT = ROOT / "models" / "btxrd-demo.pt"
DEMO_MODEL = ROOT / "models" / "btxrd-demo.onnx"
SAMPLE = ROOT / "models" / "samples" / "IMG000001.jpeg"


@pytest.fixture(scope="module")
def noise(tmp_path_factory) -> Path:
    """Uniform noise: nothing like a radiograph; the demo gate refuses it (score ~89 > ~4.6)."""
    path = tmp_path_factory.mktemp("ood") / "noise.png"
    pixels = np.random.default_rng(0).integers(0, 256, (400, 300), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def _invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_explain_gives_each_image_the_verdict_and_scores_of_btxrd_run(noise, tmp_path) -> None:
    images = [SAMPLE, noise]
    ran = _invoke(run, [*images, "--model", DEMO_MODEL, "--json", "-q"])
    explained = _invoke(
        explain,
        [*images, "--checkpoint", DEMO_CHECKPOINT, "--out", tmp_path, "--json"],
    )
    assert ran.exit_code == explained.exit_code == 1, explained.stderr  # one input refused
    document = json.loads(explained.stdout)
    assert_valid(document, "results_document")
    assert document["model"]["gate"]["sha256"] == json.loads(ran.stdout)["model"]["sha256"]
    assert "gate and calibration from " in explained.stderr and DEMO_MODEL.name in explained.stderr
    for want, got in zip(json.loads(ran.stdout)["results"], document["results"], strict=True):
        # One record builder: btxrd-run's fields, in its order, then explain's own two.
        assert list(got) == [*want, "cam_class", "overlay"]
        assert got["decode"] == want["decode"] and got["notes"] == want["notes"]
        assert got["prediction"] == want["prediction"]
        assert got["ood"]["score"] == pytest.approx(want["ood"]["score"], rel=1e-5)
        numbers = ("score", "withheld_scores")
        assert {k: v for k, v in got["ood"].items() if k not in numbers} == {
            k: v for k, v in want["ood"].items() if k not in numbers
        }
        # Calibrated, not the raw softmax; a refused image's only under ood.withheld_scores.
        assert (got["scores"] is None) == (want["scores"] is None)
        wanted = want["scores"] or want["ood"]["withheld_scores"]
        gotten = got["scores"] or got["ood"]["withheld_scores"]
        for name, probability in wanted.items():
            assert gotten[name] == pytest.approx(probability, abs=1e-6)
    kept, refused = document["results"]
    assert kept["overlay"] and Path(kept["overlay"]).is_file()
    assert refused["prediction"] is None and refused["overlay"] is None
    assert refused["ood"]["in_distribution"] is False
    assert "unlike the images this model was trained on" in refused["error"]
    assert not (tmp_path / "noise_gradcam.png").exists()  # no map for an image it refuses
    assert "unlike the images this model was trained on" in explained.stderr


def test_lines_say_not_classified(noise, tmp_path) -> None:
    result = _invoke(explain, [noise, "--checkpoint", DEMO_CHECKPOINT, "--out", tmp_path])
    assert result.exit_code == 1
    assert result.stdout.strip() == f"{noise}  not classified"


def test_a_model_of_another_checkpoint_is_refused(tiny_checkpoint, tmp_path) -> None:
    result = _invoke(
        explain, [SAMPLE, "--checkpoint", tiny_checkpoint, "--model", DEMO_MODEL, "--out", tmp_path]
    )
    assert result.exit_code == 2 and result.stdout == ""
    assert "exported from another checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_a_matching_model_it_says_there_is_no_gate(tiny_checkpoint, tmp_path) -> None:
    result = _invoke(
        explain, [SAMPLE, "--checkpoint", tiny_checkpoint, "--out", tmp_path, "--json"]
    )
    assert "no out-of-distribution gate or calibration" in result.stderr
    (record,) = json.loads(result.stdout)["results"]
    assert record["ood"] is None and json.loads(result.stdout)["model"]["gate"] is None


def test_report_shows_the_verdict_of_every_image(synth_data, noise, tmp_path) -> None:
    out = tmp_path / "report"
    result = _invoke(
        explain,
        [
            *("report", "--data", synth_data, "--checkpoint", DEMO_CHECKPOINT),
            *("--out", out, "--k", "3", "--panels", "2", "-q"),
        ],
    )
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert_valid(metrics, "metrics_document")
    gate = metrics["out_of_distribution"]
    assert gate["gate"]["sha256"] and gate["refused"] == len(gate["refused_images"])
    assert gate["retention"] == pytest.approx(1 - gate["refused"] / metrics["num_images"])
    html = (out / "report.html").read_text()
    assert ">OOD verdict<" in html
    verdicts = html.count(">in distribution</td>") + html.count(">refused</td>")
    assert verdicts == metrics["num_images"]
    assert f"refuses {gate['refused']} of {metrics['num_images']} images" in html
