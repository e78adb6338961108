"""One ``btxrd-explain report`` run decodes each image once, computes each CAM once, measures the
CAM grid once and PNG-encodes each figure file once (report.html shows its cells as JPEG instead).

The real functions are wrapped by counting wrappers that call through to them: nothing under
test is replaced, only counted.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")
pytest.importorskip("pytorch_grad_cam")

# Imported first so the wrapping below reaches the names they bind with `from ... import`.
import btxrd.explain.annotations
import btxrd.explain.gallery
import btxrd.explain.report  # noqa: F401
from btxrd.explain import cam, render
from btxrd.explain.cli import main
from btxrd.export.checkpoint import load_checkpoint
from btxrd.export.data.dataset import load_dataset
from btxrd.runtime.decode import image as imageio
from btxrd.runtime.model.preprocess import preprocess

pytestmark = [pytest.mark.torch, pytest.mark.slow]
CLASSES = ("Normal", "Benign", "Malignant")


def _digest(array) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def _wrap_everywhere(monkeypatch: pytest.MonkeyPatch, real, wrapper) -> None:
    """Replace ``real`` by ``wrapper`` in every btxrd module that holds it, wherever it was
    imported from (``from x import f`` binds its own name)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("btxrd") and module is not None:
            for attribute, value in list(vars(module).items()):
                if value is real:
                    monkeypatch.setattr(module, attribute, wrapper)


@pytest.fixture
def counted_report(synth_data: Path, tiny_checkpoint: Path, tmp_path, monkeypatch):
    """``btxrd-explain report`` with decodes, CAM computations, CAM-grid probes and PNG
    encodings counted. Returns (out, result, counts)."""
    samples = load_dataset(synth_data)
    # CAMs are counted by their input: map each image's model input back to the image.
    prep = load_checkpoint(tiny_checkpoint).preprocessing
    image_of_input = {
        _digest(preprocess(imageio.load_image(s.image_path), prep)): s.image_id for s in samples
    }
    assert len(image_of_input) == len(samples)  # every image has its own input

    decoded: Counter[str] = Counter()
    computed: Counter[tuple[str, int, str]] = Counter()
    encoded: list[render.Png] = []

    real_load_image = imageio.load_image

    def counting_load_image(path, *args, **kwargs):
        decoded[Path(path).name] += 1
        return real_load_image(path, *args, **kwargs)

    real_run_cam = cam._run_pytorch_grad_cam

    def counting_run_cam(net, layer, batch, targets, method, *rest):
        for row, target in zip(batch, targets, strict=True):
            image_id = image_of_input[_digest(row.detach().numpy())]
            computed[(image_id, int(target), method)] += 1
        return real_run_cam(net, layer, batch, targets, method, *rest)

    real_encode = render.encode_png

    def counting_encode(image):
        encoded.append(real_encode(image))
        return encoded[-1]

    _wrap_everywhere(monkeypatch, real_load_image, counting_load_image)
    monkeypatch.setattr(cam, "_run_pytorch_grad_cam", counting_run_cam)
    _wrap_everywhere(monkeypatch, real_encode, counting_encode)

    out = tmp_path / "report"
    result = CliRunner().invoke(
        main,
        [
            "report",
            *("--data", str(synth_data), "--checkpoint", str(tiny_checkpoint)),
            *("--out", str(out), "--k", "3", "--panels", "2"),
        ],
    )
    counts = {"decoded": decoded, "computed": computed, "encoded": encoded}
    return out, result, counts, len(samples)


def test_report_decodes_each_image_once_and_computes_each_cam_once(counted_report) -> None:
    out, result, counts, images = counted_report
    assert result.exit_code == 0, result.stderr

    # Every image decoded exactly once (the evaluation needs each one; nothing decodes again).
    decoded = counts["decoded"]
    assert len(decoded) == images and set(decoded.values()) == {1}, decoded

    # Each (image, class, method) CAM computed at most once, and some were computed.
    computed = counts["computed"]
    assert computed and max(computed.values()) == 1, computed
    with_cam = {image_id for image_id, _, method in computed if method == "gradcam"}

    # ... and every image the galleries or the annotation report show had its CAM computed.
    metrics = json.loads((out / "metrics.json").read_text())
    shown = {
        image_id
        for rows in metrics["gallery"].values()
        for kind in ("TP", "FP", "FN")
        for image_id in rows[kind]
    }
    report = json.loads((out / "annotation_report.json").read_text())
    scored = {record["image_id"] for record in report["per_image"]}
    assert shown and scored
    assert shown | scored <= with_cam


def test_report_encodes_each_png_file_once(counted_report) -> None:
    out, result, counts, _ = counted_report
    assert result.exit_code == 0, result.stderr
    files = sorted(out.glob("*.png"))
    names = {p.name for p in files}
    assert {f"gallery_{c}.png" for c in CLASSES} <= names
    assert "annotation_comparison.png" in names  # the tiny model gets some tumours right
    # One encoding per figure file, and the files hold exactly those bytes.
    assert len(counts["encoded"]) == len(files)
    assert sorted(png.data for png in counts["encoded"]) == sorted(p.read_bytes() for p in files)
    # The page shows the figures cell by cell with HTML captions, not the files' drawn ones.
    html = (out / "report.html").read_text()
    assert "data:image/png" not in html
    assert len(re.findall(r'<img [^>]*?src="data:image/jpeg;base64,', html)) > len(files)
