"""The Python API: one image, many images, failures as records, pickling."""

from __future__ import annotations

import inspect
import pickle
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from btxrd.runtime.errors import InputError
from btxrd.runtime.model.classifier import Classifier, Prediction
from btxrd.runtime.model.selftest import check_reference_scores
from btxrd.runtime.settings import DecodeLimits

CLASSES = ("Normal", "Benign", "Malignant")


@pytest.fixture(scope="module")
def classifier(tiny_onnx) -> Classifier:
    return Classifier(tiny_onnx, batch_size=2)


def _scores(prediction: Prediction) -> np.ndarray:
    return np.array([prediction.scores[c] for c in CLASSES])


def test_prediction_is_a_probability_over_the_model_classes(classifier, phantom_images):
    prediction = classifier.predict(phantom_images["gray8_png"])
    assert prediction.ok and prediction.error is None
    assert tuple(prediction.scores) == CLASSES
    assert prediction.prediction == max(prediction.scores, key=prediction.scores.get)
    assert prediction.confidence == max(prediction.scores.values())
    assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-9)
    assert prediction.image_name == "gray8.png"
    assert prediction.path == str(phantom_images["gray8_png"])
    record = prediction.to_record()
    assert list(record)[:4] == ["image_name", "prediction", "confidence", "scores"]


def test_path_pil_image_and_array_agree(classifier, tmp_path, make_phantom):
    pixels = make_phantom(120, 90, seed=11)
    path = tmp_path / "same.png"
    Image.fromarray(pixels).save(path)
    from_path = classifier.predict(path)
    from_str = classifier.predict(str(path))
    with Image.open(path) as opened:
        from_image = classifier.predict(opened)
    from_array = classifier.predict(pixels)
    for other in (from_str, from_image, from_array):
        np.testing.assert_array_equal(_scores(other), _scores(from_path))
        assert other.prediction == from_path.prediction


def test_16_bit_array_is_scaled_like_the_16_bit_file(classifier, tmp_path, make_phantom):
    deep = make_phantom(80, 80, seed=12, depth=4095)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    np.testing.assert_array_equal(
        _scores(classifier.predict(deep)), _scores(classifier.predict(path))
    )


def test_predict_raises_input_error_for_an_unreadable_file(classifier, tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        classifier.predict(path)


def test_predict_refuses_objects_that_are_not_images(classifier):
    with pytest.raises(InputError, match="dict"):
        classifier.predict({"not": "an image"})


def test_predict_many_keeps_order_and_records_a_bad_file_in_the_middle(
    classifier, phantom_images, tmp_path
):
    bad = tmp_path / "corrupt.png"
    bad.write_text("not a png", encoding="utf-8")
    good = list(phantom_images.values())
    sources = [*good[:2], bad, *good[2:]]
    results = list(classifier.predict_many(sources))
    assert [r.image_name for r in results] == [p.name for p in sources]
    failed = results[2]
    assert not failed.ok
    assert failed.prediction is None and failed.confidence is None and failed.scores == {}
    assert str(bad) in failed.error and "not an image file" in failed.error
    for source, result in zip(sources, results, strict=True):
        if source is bad:
            continue
        assert result.ok
        single = classifier.predict(source)
        np.testing.assert_allclose(_scores(result), _scores(single), rtol=0, atol=1e-6)


def test_predict_many_is_lazy_with_bounded_read_ahead(tiny_onnx, phantom_images):
    taken = 0

    def sources():
        nonlocal taken
        for _ in range(1000):
            taken += 1
            yield phantom_images["gray8_png"]

    stream = Classifier(tiny_onnx, batch_size=2).predict_many(sources())
    first = next(stream)
    assert first.ok
    assert taken <= 16, f"{taken} of 1000 sources read to produce the first result"
    stream.close()


def _overlapping_images(make_phantom) -> list[Image.Image]:
    """Two real images whose decoding overlaps in time, the first to start finishing first.

    Only their ``load`` is instrumented (to order two decoder threads deterministically); the
    classifier, its thread pool and the decoder run unchanged.
    """
    lock = threading.Lock()
    entered: list[Image.Image] = []
    first_left = threading.Event()
    first_thread: list[int] = []

    def first_has_left_the_decoder() -> bool:
        """The first decoder's thread has returned from ``Classifier._prepare`` (and from any
        context the decode path might open around ``load``), read from its live stack."""
        frame = sys._current_frames().get(first_thread[0])
        while frame is not None:
            if frame.f_code.co_name == "_prepare":
                return False
            frame = frame.f_back
        return True

    def instrumented(image: Image.Image) -> Image.Image:
        original = image.load

        def load():
            with lock:
                if any(seen is image for seen in entered):  # Pillow loads again later: no wait
                    return original()
                entered.append(image)
                first = len(entered) == 1
                if first:
                    first_thread.append(threading.get_ident())
            if first:  # wait (bounded) until the other decoder is inside too, then leave
                deadline = time.monotonic() + 2.0
                while len(entered) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                result = original()
                first_left.set()
                return result
            first_left.wait(2.0)
            deadline = time.monotonic() + 5.0  # leave only once the first decoder is out
            while not first_has_left_the_decoder():
                assert time.monotonic() < deadline, "the first decoder never left"
                time.sleep(0.001)
            return original()

        image.load = load
        return image

    return [instrumented(Image.fromarray(make_phantom(64, 64, seed=s))) for s in (1, 2)]


def test_predict_many_leaves_the_warning_filters_alone(tiny_onnx, make_phantom):
    classifier = Classifier(tiny_onnx, batch_size=2, decode_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        before = list(warnings.filters)
        results = list(classifier.predict_many(_overlapping_images(make_phantom)))
        after = list(warnings.filters)
    assert all(r.ok for r in results)
    assert after == before


def test_batch_size_does_not_change_scores(tiny_onnx, phantom_images):
    paths = list(phantom_images.values())
    one = [_scores(p) for p in Classifier(tiny_onnx, batch_size=1).predict_many(paths)]
    many = [_scores(p) for p in Classifier(tiny_onnx, batch_size=8).predict_many(paths)]
    np.testing.assert_allclose(np.array(one), np.array(many), rtol=0, atol=1e-5)


def test_with_cam_returns_per_class_maps_and_the_decoded_image(classifier, phantom_images):
    prediction = classifier.predict(phantom_images["gray_jpeg"], with_cam=True)
    assert prediction.cam is not None
    assert prediction.cam.shape[0] == len(CLASSES)
    assert prediction.image is not None and prediction.image.size == (80, 96)
    plain = classifier.predict(phantom_images["gray_jpeg"])
    assert plain.cam is None and plain.image is None
    np.testing.assert_allclose(_scores(prediction), _scores(plain), rtol=0, atol=1e-6)


def test_classifier_pickles_and_predicts_the_same(tiny_onnx, phantom_images):
    # Every constructor setting away from its default: each must survive the trip.
    settings = {
        "threads": 1,
        "batch_size": 3,
        "limits": DecodeLimits(min_side=20),
        "decode_workers": 3,
        "ood_gate": False,
        "fast_decode": True,
        "fast_decode_margin": 4,
    }
    assert set(settings) | {"model_path"} == set(
        inspect.signature(Classifier.__init__).parameters
    ) - {"self"}
    original = Classifier(tiny_onnx, **settings)
    clone = pickle.loads(pickle.dumps(original))
    assert clone.model_path == original.model_path
    assert {name: getattr(clone, name) for name in settings} == settings
    assert clone.info.sha256 == original.info.sha256
    for path in phantom_images.values():
        np.testing.assert_array_equal(_scores(clone.predict(path)), _scores(original.predict(path)))


def test_decode_limits_apply_to_files(tiny_onnx, phantom_images):
    strict = Classifier(tiny_onnx, limits=DecodeLimits(min_side=200))
    with pytest.raises(InputError, match="not a plausible radiograph"):
        strict.predict(phantom_images["gray8_png"])


def test_decode_limits_apply_to_in_memory_images(tiny_onnx, make_phantom):
    strict = Classifier(tiny_onnx, limits=DecodeLimits(min_side=200))
    with pytest.raises(InputError, match="not a plausible radiograph"):
        strict.predict(make_phantom(96, 80, seed=1))


def test_selftest_reproduces_the_exported_reference_scores(classifier):
    report = check_reference_scores(classifier)
    assert report.passed, report.lines
    assert report.lines[-1] == "selftest passed"
    assert {line.split(":")[0] for line in report.lines[:-1]} == {"bar", "rings", "ramp"}


def test_demo_model_classifies_its_samples(demo_onnx, sample_images):
    if not sample_images:
        pytest.skip("no shipped samples next to the demo model")
    results = list(Classifier(demo_onnx).predict_many(sample_images))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert check_reference_scores(Classifier(demo_onnx)).passed


def test_model_path_is_kept_as_given(tiny_onnx):
    assert Classifier(str(tiny_onnx)).model_path == Path(tiny_onnx)
