"""Trust fitted at export: temperature scaling, the out-of-distribution score in the graph, and
the exported file that carries both (``btxrd.export.trust``, ``btxrd-export --calibration-data``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from schema_check import assert_valid

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("scipy")
pytest.importorskip("sklearn")
import onnxruntime as ort  # noqa: E402

from btxrd.export.checkpoint import build_model, load_checkpoint  # noqa: E402
from btxrd.export.cli import main as export_main  # noqa: E402
from btxrd.export.onnx_export import TrustHead, _quiet_exporter  # noqa: E402
from btxrd.export.parity import (  # noqa: E402
    TrustReference,
    check_parity,
    reference_image,
    reference_outputs,
    write_parity_images,
)
from btxrd.export.synthetic.generate import SynthOptions, generate_dataset  # noqa: E402
from btxrd.export.trust.calibration import (  # noqa: E402
    calibration_metrics,
    fit_temperature,
    softmax,
)
from btxrd.export.trust.ood import (  # noqa: E402
    OodScorer,
    fit_mahalanobis,
    fit_scorer,
    threshold_at,
)
from btxrd.export.trust.taps import pooled_taps, tap_modules, tap_widths  # noqa: E402
from btxrd.runtime.labels.metrics import expected_calibration_error  # noqa: E402
from btxrd.runtime.model.contract import (  # noqa: E402
    CAM_NAME,
    LOGITS_NAME,
    OOD_SCORE_NAME,
    PROBABILITIES_NAME,
    ModelMetadata,
)

pytestmark = pytest.mark.torch


# --- calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_temperature_fit_recovers_a_known_temperature(true_temperature: float) -> None:
    # Labels drawn from softmax(z); the model reports z * T, so dividing by T calibrates it.
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2.0, (6000, 3))
    p = softmax(z)
    labels = (rng.random((len(z), 1)) > p.cumsum(axis=1)).sum(axis=1)
    fitted = fit_temperature(z * true_temperature, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_temperature_scaling_lowers_nll_and_ece_and_keeps_the_argmax() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, (4000, 3))
    labels = (rng.random((len(z), 1)) > softmax(z).cumsum(axis=1)).sum(axis=1)
    overconfident = 3.0 * z
    t = fit_temperature(overconfident[:2000], labels[:2000])
    before = calibration_metrics(softmax(overconfident[2000:]), labels[2000:])
    after = calibration_metrics(softmax(overconfident[2000:], t), labels[2000:])
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]
    assert after["brier"] < before["brier"]
    assert (softmax(overconfident, t).argmax(1) == overconfident.argmax(1)).all()


def test_ece_by_hand() -> None:
    # Two bins used: confidence 0.9 (2 images, 1 right) and 0.6 (2 images, 2 right).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.4
    assert expected_calibration_error(labels, probs, bins=15) == pytest.approx(0.4)
    metrics = calibration_metrics(probs, labels)
    assert metrics["brier"] == pytest.approx((0.02 + 1.62 + 0.32 + 0.32) / 4)


# --- out-of-distribution scores ------------------------------------------------------------------


def _features(seed: int = 0, n: int = 300, dims: int = 24, classes: int = 3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(0, 3, (classes, dims))
    mixing = rng.normal(0, 1, (dims, dims)) / np.sqrt(dims)
    features = centres[labels] + rng.normal(0, 1, (n, dims)) @ mixing + 5.0
    return features, labels


WIDTHS = (8, 12, 24)  # three taps, as the pooled features of a small network


def _taps(seed: int = 0, n: int = 300, classes: int = 3):
    """Concatenated 'pooled taps' with class structure in every tap, and labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    parts = []
    for width in WIDTHS:
        centres = np.random.default_rng(width).normal(0, 3, (classes, width))
        mixing = np.random.default_rng(width + 1).normal(0, 1, (width, width)) / np.sqrt(width)
        parts.append(centres[labels] + rng.normal(0, 1, (n, width)) @ mixing + 5.0)
    return np.concatenate(parts, axis=1), labels


def _pooled_list(features: np.ndarray) -> list:
    edges = np.cumsum(WIDTHS)[:-1]
    return [torch.tensor(p).float() for p in np.split(features, edges, axis=1)]


@pytest.mark.parametrize(
    ("method", "combine"),
    [("mahalanobis_multilayer", "max"), ("mahalanobis_multilayer", "sum"), ("mahalanobis", "max")],
)
def test_mahalanobis_in_the_graph_equals_numpy(method: str, combine: str, tmp_path: Path) -> None:
    features, labels = _taps()
    scorer = fit_scorer(method, WIDTHS, features, labels, 3, combine)
    head = TrustHead(1.3, scorer).eval()
    probe, _ = _taps(seed=1, n=40)
    probe[:5] *= 4.0  # far from every class
    logits = np.random.default_rng(2).normal(0, 2, (40, 3))
    want = scorer.score(probe, logits)
    with torch.no_grad():
        probs, got = head(_pooled_list(probe), torch.tensor(logits).float())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probs.numpy(), softmax(logits, 1.3), atol=1e-6)
    # And as an ONNX graph in onnxruntime.
    onnx_ood, onnx_probs = _run_head_in_onnxruntime(head, probe, logits, tmp_path)
    np.testing.assert_allclose(onnx_ood, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(onnx_probs, softmax(logits, 1.3), atol=1e-6)


def test_numpy_mahalanobis_is_the_textbook_formula() -> None:
    features, labels = _taps()
    fit = fit_mahalanobis(features, labels, 3)
    f = features[7]
    precision = np.linalg.inv(fit.covariance)
    want = min(np.sqrt((f - m) @ precision @ (f - m)) for m in fit.means)
    assert fit.score(features[7:8])[0] == pytest.approx(want, rel=1e-10)


def test_multilayer_score_catches_a_shift_in_any_one_tap() -> None:
    features, labels = _taps()
    scorer = fit_scorer("mahalanobis_multilayer", WIDTHS, features[:200], labels[:200], 3)
    held_out = features[200:]
    inside = scorer.score(held_out, np.zeros((100, 3)))
    for start, width in zip(np.cumsum((0, *WIDTHS[:-1])), WIDTHS, strict=True):
        shifted = held_out.copy()
        shifted[:, start : start + width] += 6.0  # only this tap moves
        outside = scorer.score(shifted, np.zeros((100, 3)))
        assert np.median(outside) > np.quantile(inside, 0.99)
    # The last tap alone cannot see a shift of the first.
    last = fit_scorer("mahalanobis", WIDTHS, features[:200], labels[:200], 3)
    shifted = held_out.copy()
    shifted[:, : WIDTHS[0]] += 6.0
    np.testing.assert_allclose(last.score(shifted, None), last.score(held_out, None))


@pytest.mark.parametrize("method", ["msp", "energy", "feature_norm"])
def test_other_scores_in_the_graph_equal_numpy(method: str) -> None:
    features, _ = _taps(n=20)
    logits = np.random.default_rng(4).normal(0, 3, (20, 3))
    scorer = OodScorer(method, WIDTHS)
    head = TrustHead(2.0, scorer).eval()
    with torch.no_grad():
        _, got = head(_pooled_list(features), torch.tensor(logits).float())
    np.testing.assert_allclose(got.numpy(), scorer.score(features, logits), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch_name", ["resnet18", "efficientnet_b0"])
def test_taps_end_with_what_the_classifier_reads(arch_name: str, make_model) -> None:
    from btxrd.export.archs import get_arch

    model = make_model(arch_name)
    arch = get_arch(arch_name).locate(model, (64, 64))
    x = torch.randn(1, 3, 64, 64)
    seen = []
    handle = arch.head(model).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        logits, taps = pooled_taps(model, arch, x)
    finally:
        handle.remove()
    torch.testing.assert_close(taps[-1], seen[0])
    torch.testing.assert_close(logits, model(x))
    assert len(taps) == len(tap_modules(model)) > 1
    assert tap_widths(model, arch, (64, 64))[-1] == arch.head(model).in_features


@pytest.mark.parametrize("arch_name", ["densenet121", "timm/convnext_atto"])
def test_other_layouts_have_one_tap_the_penultimate_vector(arch_name: str, make_model) -> None:
    from btxrd.export.archs import get_arch

    if arch_name.startswith("timm/"):
        pytest.importorskip("timm")
    model = make_model(arch_name)
    arch = get_arch(arch_name).locate(model, (64, 64))
    assert tap_modules(model) is None
    assert tap_widths(model, arch, (64, 64)) == (arch.head(model).in_features,)


def test_threshold_keeps_the_stated_share() -> None:
    scores = np.random.default_rng(5).normal(size=1000)
    threshold = threshold_at(scores, 0.99)
    assert (scores <= threshold).mean() >= 0.99
    assert (scores <= threshold).mean() < 0.992
    # Halfway between the last kept score and the first refused one, so float32 noise in the
    # graph cannot move an image across it.
    ordered = np.sort(scores)
    kept, refused = ordered[ordered <= threshold][-1], ordered[ordered > threshold][0]
    assert threshold == pytest.approx((kept + refused) / 2)
    assert threshold_at(scores, 1.0) > ordered[-1]


def _run_head_in_onnxruntime(head, features, logits, tmp_path: Path):
    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head

        def forward(self, pooled, scores):
            parts = list(torch.split(pooled, list(WIDTHS), dim=1))
            probs, ood = self.head(parts, scores)
            return ood, probs

    batch = torch.export.Dim("batch", min=1, max=1024)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            Wrapper().eval(),
            (torch.zeros(2, features.shape[1]), torch.zeros(2, 3)),
            input_names=["pooled", "scores"],
            output_names=["ood", "probs"],
            dynamo=True,
            dynamic_shapes={"pooled": {0: batch}, "scores": {0: batch}},
        )
    path = tmp_path / "head.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ood, probs = session.run(
        None, {"pooled": features.astype(np.float32), "scores": logits.astype(np.float32)}
    )
    return ood, probs


# --- the exported file ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory) -> Path:
    """A tiny BTXRD-layout folder: 45 small synthetic radiographs, every class in every split."""
    out = tmp_path_factory.mktemp("synth") / "tinysynth"
    generate_dataset(out, SynthOptions(n=45, seed=7, min_size=64, max_size=160), workers=1)
    return out


@pytest.fixture(scope="module")
def trusted(tiny_checkpoint: Path, radiograph_dir: Path, synthetic_folder: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("trusted") / "tiny.onnx"
    args = ["--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    args += ["--parity-images", str(radiograph_dir), "--calibration-data", str(synthetic_folder)]
    # 45 images leave about 2 of a class in val, far below the default bar of a real fit.
    args += ["--min-val-per-class", "1"]
    result = CliRunner().invoke(export_main, args)
    return {"result": result, "onnx": out, "report": out.with_suffix(".parity.json")}


def test_exported_file_carries_trust_metadata(trusted: dict, synthetic_folder: Path) -> None:
    result = trusted["result"]
    assert result.exit_code == 0, result.stderr
    assert "temperature" in result.stdout and "gate mahalanobis_multilayer" in result.stdout
    assert "no --calibration-data" not in result.stderr
    props = {p.key: p.value for p in onnx.load(str(trusted["onnx"])).metadata_props}
    meta = ModelMetadata.from_metadata_props(props, "tiny.onnx")
    assert meta.trust is not None
    calibration, gate = meta.trust.calibration, meta.trust.ood
    assert calibration.method == "temperature" and calibration.temperature > 0
    assert calibration.fitted_on.data == "tinysynth" and calibration.fitted_on.split == "val"
    assert calibration.fitted_on.split_file is None  # the split was made at export
    assert set(calibration.metrics["before"]) == {"nll", "brier", "ece"}
    assert gate.method == "mahalanobis_multilayer" and gate.direction == "higher_is_ood"
    assert gate.retention == 0.99 and gate.fitted_on.split == "train"
    parts = [gate.fitted_on.num_images, gate.threshold_set_on.num_images]
    assert sum(parts) + calibration.metrics["num_images"] == 45
    # resnet18's taps: the stem's pooling output, then layer1 to layer4
    assert gate.details["channels"] == [64, 64, 128, 256, 512]
    refs = meta.reference_scores
    assert (
        set(refs["ood_scores"])
        == set(refs["calibrated_probabilities"])
        == {
            "bar",
            "rings",
            "ramp",
        }
    )


def test_exported_file_has_the_new_outputs_and_they_agree(trusted: dict) -> None:
    session = ort.InferenceSession(str(trusted["onnx"]), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == [LOGITS_NAME, CAM_NAME, PROBABILITIES_NAME, OOD_SCORE_NAME]
    props = session.get_modelmeta().custom_metadata_map
    temperature = ModelMetadata.from_metadata_props(props, "x").trust.calibration.temperature
    x = np.random.default_rng(0).normal(size=(4, 3, 64, 64)).astype(np.float32)
    logits, _cam, probs, ood = session.run(None, {"image": x})
    assert probs.shape == (4, 3) and ood.shape == (4,) and ood.dtype == np.float32
    np.testing.assert_allclose(probs, softmax(logits, temperature), atol=1e-6)
    assert np.isfinite(ood).all()


def test_trust_outputs_pass_parity(trusted: dict) -> None:
    report = json.loads(trusted["report"].read_text())
    assert report["passed"], report["failures"]
    assert_valid(report, "parity_report")
    assert report["ood_method"] == "mahalanobis_multilayer"
    assert report["calibrated_max_abs_diff"] <= 1e-4
    assert report["ood_max_relative_diff"] <= report["ood_relative_tolerance"] == 1e-3
    assert report["ood_method"] == "mahalanobis_multilayer"
    assert all("ood_score_onnx" in row for row in report["images"])


def test_parity_fails_for_a_wrong_temperature_or_wrong_statistics(
    trusted: dict, tiny_checkpoint: Path, radiograph_dir: Path, find_images, tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(tiny_checkpoint)
    model, arch = build_model(checkpoint)
    prep = checkpoint.preprocessing
    cases = write_parity_images(find_images(radiograph_dir)[:1], tmp_path / "images")
    images = [reference_image(c.path) for c in cases]
    _, features = reference_outputs(model, arch, images, prep)
    labels = np.arange(len(features)) % 3
    widths = tap_widths(model, arch, prep.image_size)
    other = fit_scorer("mahalanobis_multilayer", widths, features + 1.0, labels, 3)
    wrong_temperature = TrustReference(arch, _temperature_of(trusted["onnx"]) * 3 + 1, other)
    report = check_parity(model, trusted["onnx"], cases, prep, wrong_temperature)
    assert not report["passed"]
    assert report["calibrated_max_abs_diff"] > 1e-4
    assert report["ood_max_relative_diff"] > 1e-3  # statistics of other features


def _temperature_of(path: Path) -> float:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return ModelMetadata.from_metadata_props(props, str(path)).trust.calibration.temperature


def test_export_without_calibration_data_works_and_says_so(
    tiny_checkpoint: Path, radiograph_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plain.onnx"
    args = ["--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(export_main, [*args, "--parity-images", str(radiograph_dir)])
    assert result.exit_code == 0, result.stderr
    (line,) = result.stderr.splitlines()
    assert "no --calibration-data" in line and "no calibration" in line
    assert "out-of-distribution gate" in line
    assert result.stdout.startswith("wrote")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [LOGITS_NAME, CAM_NAME]
    props = session.get_modelmeta().custom_metadata_map
    assert "btxrd.trust" not in props
    assert ModelMetadata.from_metadata_props(props, "plain.onnx").trust is None


def test_split_without_calibration_data_is_a_usage_error(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    split = tmp_path / "split.json"
    split.write_text('{"train": [], "val": [], "test": []}')
    args = ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx")]
    result = CliRunner().invoke(export_main, [*args, "--split", str(split)])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "--calibration-data" in line


def test_a_split_file_that_does_not_fit_the_folder_is_refused(
    tiny_checkpoint: Path, synthetic_folder: Path, tmp_path: Path
) -> None:
    split = tmp_path / "split.json"
    split.write_text('{"train": ["IMG999999.jpeg"], "val": [], "test": []}')
    out = tmp_path / "m.onnx"
    args = ["--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    args += ["--calibration-data", str(synthetic_folder), "--split", str(split)]
    result = CliRunner().invoke(export_main, args)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "split.json" in line and "IMG999999.jpeg" in line
    assert not out.exists()


def test_a_split_without_a_class_in_train_is_refused(
    tiny_checkpoint: Path, synthetic_folder: Path, tmp_path: Path
) -> None:
    from btxrd.export.data.dataset import load_dataset

    samples = load_dataset(synthetic_folder)
    normal = [s.image_id for s in samples if s.label == "Normal"]
    others = [s.image_id for s in samples if s.label != "Normal"]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": normal, "val": others[:3], "test": others[3:]}))
    args = ["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "m.onnx")]
    args += ["--calibration-data", str(synthetic_folder), "--split", str(split)]
    result = CliRunner().invoke(export_main, args)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert "no training images of Benign, Malignant" in line


# --- make trust's report -----------------------------------------------------------------------


@pytest.mark.slow
def test_trust_measurement_writes_its_report(
    trusted: dict, tiny_checkpoint: Path, synthetic_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    """``python -m btxrd.export.trust.measure`` end to end on the tiny exported file, with a
    6-image fresh set and 2 images per out-of-distribution set (their real builders): trust.json
    follows the results schema and measures the file's own gate."""
    from btxrd.export.data.dataset import load_dataset, split_dataset, write_split
    from btxrd.export.trust import measure, sets

    def small_sets(out: Path, fresh) -> dict[str, list[Path]]:
        built = {
            "ct_mr": sets.ct_mr_slices()[:2],
            "photographs": sets.photographs()[:2],
            "faces": sets.faces(out / "faces")[:2],
            "documents": sets.documents(out / "documents", n=2),
            "noise": sets.noise(out / "noise", n=2),
            "flat": sets.flat(out / "flat", n=2),
            "inverted": sets.inverted(out / "inverted", fresh[:2]),
        }
        return {name: built[name] for name in sets.OOD_SETS}

    monkeypatch.setattr(measure, "FRESH_N", 6)
    monkeypatch.setattr(measure, "build_ood_sets", small_sets)
    split = tmp_path / "split.json"
    write_split(split, split_dataset(load_dataset(synthetic_folder), seed=0))
    assert_valid(json.loads(split.read_text()), "split")
    args = ["--checkpoint", tiny_checkpoint, "--model", trusted["onnx"], "--data", synthetic_folder]
    args += ["--split", split, "--out", tmp_path / "trust"]
    result = CliRunner().invoke(measure.main, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    assert "SHIPPED FILE" in result.stdout
    report = json.loads((tmp_path / "trust" / "trust.json").read_text())
    assert_valid(report, "trust_measurement")
    assert report["shipped_file"]["method"] == "mahalanobis_multilayer"
    assert report["in_distribution"]["fresh"]["num_images"] == 6
