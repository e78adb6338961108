"""``--fast-decode``: JPEGs decoded at a reduced DCT scale, with real onnxruntime on real files.

What is checked here is behaviour (same top-1, what each record says, limits still enforced);
how much faster it is lives in ``bench/`` (folder section), never in a test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from schema_check import assert_valid

from btxrd.runtime.cli.run import main
from btxrd.runtime.decode.decoded import EXACT, NOT_JPEG_NOTE
from btxrd.runtime.decode.image import load_image
from btxrd.runtime.errors import InputError
from btxrd.runtime.model.classifier import Classifier
from btxrd.runtime.settings import DecodeLimits

CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


def _enlarged(samples, folder, factor: int = 4):
    """The samples as the large JPEGs users have (a radiograph is 2000 px and more a side)."""
    folder.mkdir()
    out = []
    for path in samples:
        with Image.open(path) as opened:
            big = opened.resize((opened.width * factor, opened.height * factor), Image.BILINEAR)
        target = folder / f"{path.stem}_x{factor}.jpeg"
        big.save(target, quality=92)
        out.append(target)
    return out


def _jpegs(sample_images):
    jpegs = [p for p in sample_images if p.suffix.lower() in (".jpg", ".jpeg")]
    if not jpegs:
        pytest.skip("no sample JPEGs")
    return jpegs


def test_fast_path_gives_the_same_top1_on_the_samples(demo_onnx, sample_images, tmp_path):
    inputs = [*_jpegs(sample_images), *_enlarged(_jpegs(sample_images), tmp_path / "large")]
    exact = list(Classifier(demo_onnx, ood_gate=False).predict_many(inputs))
    fast = list(Classifier(demo_onnx, ood_gate=False, fast_decode=True).predict_many(inputs))
    assert [p.prediction for p in fast] == [p.prediction for p in exact]
    assert {p.decode for p in exact} == {EXACT}
    drafted = [p.decode for p in fast if p.decode != EXACT]
    assert drafted and all(d in ("jpeg-draft-1/2", "jpeg-draft-1/4") for d in drafted)


def test_the_scale_keeps_both_sides_at_least_margin_times_the_input(tmp_path):
    path = tmp_path / "big.jpeg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (2500, 2000), np.uint8)).save(path)
    for want, decode, size in [
        ((448, 448), "jpeg-draft-1/4", (500, 625)),
        ((224, 224), "jpeg-draft-1/8", (250, 313)),
        ((1200, 1200), EXACT, (2000, 2500)),
    ]:
        decoded = load_image(path, draft=want)
        assert (decoded.decode, decoded.image.size) == (decode, size)


def test_an_exif_rotated_jpeg_is_scaled_for_its_upright_size(tmp_path):
    path = tmp_path / "rotated.jpeg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape 800 x 400, shown portrait 400 x 800
    noise = np.random.default_rng(1).integers(0, 256, (400, 800), np.uint8)
    Image.fromarray(noise).save(path, exif=exif.tobytes())
    decoded = load_image(path, draft=(300, 100))
    assert decoded.image.size[0] >= 300 and decoded.image.size[1] >= 100
    assert decoded.image.height > decoded.image.width  # upright


def test_records_say_which_decode_was_used(demo_onnx, sample_images, phantom_images, tmp_path):
    large = _enlarged(_jpegs(sample_images)[:1], tmp_path / "large", factor=8)[0]
    png = phantom_images["gray8_png"]
    args = ["--model", demo_onnx, "--no-ood-gate", "--jsonl", "--quiet", large, png]
    plain = CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)
    fast = CliRunner().invoke(main, [str(a) for a in [*args, "--fast-decode"]], env=CLEAN_ENV)
    assert plain.exit_code == 0 and fast.exit_code == 0, fast.stderr
    plain_records = [json.loads(line) for line in plain.stdout.splitlines()]
    fast_records = [json.loads(line) for line in fast.stdout.splitlines()]
    for record in (*plain_records, *fast_records):
        assert_valid(record, "jsonl_record")
    assert [r["decode"] for r in plain_records] == [EXACT, EXACT]
    assert not any("fast decode" in note for r in plain_records for note in r["notes"])
    assert fast_records[0]["decode"].startswith("jpeg-draft-1/")
    # A PNG ignores the flag, and its record says so.
    assert fast_records[1]["decode"] == EXACT
    assert NOT_JPEG_NOTE in fast_records[1]["notes"]
    assert fast_records[1]["scores"] == plain_records[1]["scores"]


@pytest.mark.parametrize("kind", ["gray8_png", "gray16_png"])
def test_non_jpeg_inputs_decode_exactly_with_the_flag(phantom_images, kind):
    path = phantom_images[kind]
    fast = load_image(path, draft=(32, 32))
    assert fast.decode == EXACT and NOT_JPEG_NOTE in fast.notes
    np.testing.assert_array_equal(np.asarray(fast.image), np.asarray(load_image(path).image))


def test_the_config_turns_fast_decode_on(demo_onnx, sample_images, tmp_path):
    large = _enlarged(_jpegs(sample_images)[:1], tmp_path / "large", factor=8)[0]
    config = tmp_path / "fast.yaml"
    config.write_text("inference:\n  fast_decode: true\n  fast_decode_margin: 1\n")
    args = ["--model", demo_onnx, "--config", config, "--no-ood-gate", "--jsonl", "-q", large]
    result = CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["decode"].startswith("jpeg-draft-1/")


def _jpeg_claiming(path, width: int, height: int):
    """A real small JPEG whose frame header (SOF0) claims another size."""
    Image.new("L", (64, 64), 128).save(path, quality=90)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("width", "height", "message"),
    [
        # 1/8 of these would be small enough to pass: the full size in the header is judged.
        (12_000, 9_000, "exceeds the limit of 100,000,000|decompression bomb"),
        (30_000, 30_000, "decompression bomb"),
    ],
    ids=["over-default-limit", "pillow-bomb"],
)
# Pillow warns on opening a header over its own 89 MP threshold; btxrd's limit then refuses it.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decode_limits_apply_on_the_fast_path(tmp_path, width, height, message):
    path = _jpeg_claiming(tmp_path / "bomb.jpeg", width, height)
    with pytest.raises(InputError, match=message):
        load_image(path, draft=(224, 224))


def test_a_configured_pixel_limit_judges_the_full_size(tmp_path):
    path = tmp_path / "real.jpeg"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (400, 400), np.uint8)).save(path)
    # Drafted to 1/4 it would be 100 x 100 = 10,000 pixels, within the limit; 400 x 400 is not.
    with pytest.raises(InputError, match="exceeds the limit of 50,000"):
        load_image(path, DecodeLimits(max_pixels=50_000), draft=(100, 100))


def test_a_bomb_is_an_error_record_with_the_flag(demo_onnx, tmp_path):
    bomb = _jpeg_claiming(tmp_path / "bomb.jpeg", 30_000, 30_000)
    result = CliRunner().invoke(
        main,
        ["--model", str(demo_onnx), "--fast-decode", "--jsonl", "-q", str(bomb)],
        env=CLEAN_ENV,
    )
    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert "decompression bomb" in record["error"] and record["decode"] is None
