"""Decoding: every mode becomes 8-bit "L" or "RGB" one documented way; bad files fail clearly."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from btxrd.runtime.decode.formats import DICOM, PILLOW, image_suffixes, pillow_formats
from btxrd.runtime.decode.image import decode_pil, load_image
from btxrd.runtime.decode.inputs import collect_folder
from btxrd.runtime.decode.pixels import BLANK_STD, scale_to_uint8
from btxrd.runtime.errors import InputError
from btxrd.runtime.settings import DecodeLimits

EXIF_ORIENTATION = 0x0112
REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_strict(path: Path, limits: DecodeLimits | None = None):
    """``load_image`` with every warning turned into an error, so none can leak to callers."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_image(path, limits)


def _pixels(decoded) -> np.ndarray:
    return np.asarray(decoded.image)


@pytest.fixture
def gray(make_phantom) -> np.ndarray:
    return make_phantom(48, 40, seed=7)


# --- modes --------------------------------------------------------------------------------


def test_l_png_is_returned_unchanged(tmp_path, gray):
    path = tmp_path / "l.png"
    Image.fromarray(gray).save(path)
    decoded = _load_strict(path)
    assert decoded.image.mode == "L"
    assert decoded.source_mode == "L"
    np.testing.assert_array_equal(_pixels(decoded), gray)


def test_rgb_png_is_returned_unchanged(tmp_path, gray):
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1)
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb).save(path)
    decoded = _load_strict(path)
    assert decoded.image.mode == "RGB"
    np.testing.assert_array_equal(_pixels(decoded), rgb)


def test_bilevel_becomes_l_with_0_and_255(tmp_path, gray):
    path = tmp_path / "one.png"
    Image.fromarray(gray).convert("1", dither=Image.Dither.NONE).save(path)
    decoded = _load_strict(path)
    assert decoded.source_mode == "1"
    assert decoded.image.mode == "L"
    pixels = _pixels(decoded)
    assert set(np.unique(pixels)) == {0, 255}
    np.testing.assert_array_equal(pixels == 255, gray >= 128)


def test_palette_without_transparency_is_its_palette_colours(tmp_path, gray):
    palette = Image.fromarray(np.stack([gray, gray, 255 - gray], axis=-1)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16
    )
    path = tmp_path / "p.png"
    palette.save(path)
    decoded = _load_strict(path)
    assert decoded.source_mode == "P"
    assert decoded.image.mode == "RGB"
    lut = np.asarray(palette.getpalette(), dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(_pixels(decoded), lut[np.asarray(palette)])


def test_palette_transparency_is_flattened_onto_black(tmp_path):
    indices = np.zeros((32, 32), dtype=np.uint8)
    indices[8:24, 8:24] = 1  # a grey square on a transparent (but white-coloured) field
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 255, 255, 120, 130, 140] + [0, 0, 0] * 254)
    path = tmp_path / "pt.png"
    image.save(path, transparency=0)
    decoded = _load_strict(path)
    assert decoded.image.mode == "RGB"
    pixels = _pixels(decoded)
    assert (pixels[indices == 0] == 0).all()
    assert (pixels[indices == 1] == (120, 130, 140)).all()


def test_palette_with_per_index_alpha_bytes_is_flattened_without_warnings(tmp_path):
    indices = np.zeros((32, 32), dtype=np.uint8)
    indices[:, 16:] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([200, 200, 200, 100, 100, 100] + [0, 0, 0] * 254)
    path = tmp_path / "pa.png"
    image.save(path, transparency=bytes([0, 255]))
    decoded = _load_strict(path)
    pixels = _pixels(decoded)
    assert (pixels[:, :16] == 0).all()
    assert (pixels[:, 16:] == 100).all()


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_onto_black(tmp_path, gray, mode):
    alpha = np.tile(np.linspace(0, 255, gray.shape[1]).round().astype(np.uint8), (gray.shape[0], 1))
    if mode == "RGBA":
        colour = np.stack([gray, gray, 255 - gray], axis=-1)
        array = np.dstack([colour, alpha])
    else:
        colour = np.stack([gray] * 3, axis=-1)
        array = np.dstack([gray, alpha])
    path = tmp_path / f"{mode}.png"
    Image.fromarray(array, mode=mode).save(path)
    decoded = _load_strict(path)
    assert decoded.source_mode == mode
    assert decoded.image.mode == "RGB"
    expected = colour.astype(np.float64) * alpha[..., None] / 255.0
    assert np.abs(_pixels(decoded).astype(np.float64) - expected).max() <= 1.0


@pytest.mark.parametrize("suffix", [".jpg", ".tif"])
def test_cmyk_becomes_rgb_as_pillow_converts_it(tmp_path, gray, suffix):
    path = tmp_path / f"cmyk{suffix}"
    cmyk = np.stack([gray, 255 - gray, gray // 3, np.full_like(gray, 20)], axis=-1)
    Image.fromarray(cmyk, mode="CMYK").save(path)
    decoded = _load_strict(path)
    assert decoded.source_mode == "CMYK"
    assert decoded.image.mode == "RGB"
    with Image.open(path) as opened:
        expected = np.asarray(opened.convert("RGB"))
    np.testing.assert_array_equal(_pixels(decoded), expected)


def test_12_bit_png_uses_the_full_8_bit_range(tmp_path, make_phantom):
    # A 12-bit detector stored in a 16-bit PNG: convert("L") would clip it to white.
    deep = make_phantom(64, 48, seed=4, depth=4095)
    deep[0, 0], deep[0, 1] = 0, 4095
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    decoded = _load_strict(path)
    assert decoded.source_mode.startswith("I")
    assert decoded.image.mode == "L"
    pixels = _pixels(decoded)
    assert pixels.min() == 0 and pixels.max() == 255
    expected = np.rint(deep.astype(np.float64) * 255.0 / 4095.0).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)
    assert len(np.unique(pixels)) > 200  # not squashed into a few grey levels


def test_16_bit_png_is_scaled_by_its_real_range_not_the_type_range(tmp_path):
    values = np.linspace(1000, 3000, 40 * 32).reshape(40, 32).round().astype(np.uint16)
    path = tmp_path / "narrow.png"
    Image.fromarray(values).save(path)
    pixels = _pixels(_load_strict(path))
    expected = np.rint((values.astype(np.float64) - 1000) * 255.0 / 2000).astype(np.uint8)
    np.testing.assert_array_equal(pixels, expected)


def test_32_bit_integer_tiff_is_scaled_by_its_range(tmp_path, gray):
    values = gray.astype(np.int32) * 1000 - 70_000  # negative and beyond 16 bits
    path = tmp_path / "i.tif"
    Image.fromarray(values).save(path)
    decoded = _load_strict(path)
    assert decoded.source_mode == "I"
    expected = np.rint((values - values.min()) * 255.0 / float(values.max() - values.min())).astype(
        np.uint8
    )
    np.testing.assert_array_equal(_pixels(decoded), expected)


def test_float_tiff_is_scaled_by_its_range(tmp_path, gray):
    values = gray.astype(np.float32) / 255.0 * 3.5 - 1.25
    path = tmp_path / "f.tif"
    Image.fromarray(values).save(path)
    decoded = _load_strict(path)
    assert decoded.source_mode == "F"
    assert decoded.image.mode == "L"
    low, high = float(values.min()), float(values.max())
    expected = np.rint((values.astype(np.float64) - low) * 255.0 / (high - low)).astype(np.uint8)
    np.testing.assert_array_equal(_pixels(decoded), expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_nan_or_infinity_is_refused(tmp_path, gray, bad):
    values = gray.astype(np.float32)
    values[5, 5] = bad
    path = tmp_path / "bad.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(InputError, match="NaN or infinity") as caught:
        _load_strict(path)
    assert str(path) in str(caught.value)


def test_scale_to_uint8_refuses_colour_data():
    with pytest.raises(InputError, match="single-channel"):
        scale_to_uint8(np.zeros((4, 4, 3)), "x.tif")


# --- orientation and frames -----------------------------------------------------------------


def _asymmetric_rgb(height: int = 60, width: int = 90) -> Image.Image:
    """Non-square, with a bright block in the top-left corner, so any rotation shows."""
    y, x = np.mgrid[0:height, 0:width]
    red = (x * 255 // (width - 1)).astype(np.uint8)
    green = (y * 255 // (height - 1)).astype(np.uint8)
    blue = np.zeros((height, width), dtype=np.uint8)
    blue[:15, :20] = 255
    return Image.fromarray(np.dstack([red, green, blue]))


def test_exif_orientation_6_jpeg_comes_out_upright(tmp_path):
    upright = _asymmetric_rgb()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored turned left; viewers turn it 90 degrees clockwise
    path = tmp_path / "exif6.jpg"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    decoded = _load_strict(path)
    assert decoded.image.size == upright.size
    got = _pixels(decoded).astype(np.float64)
    want = np.asarray(upright, dtype=np.float64)
    upside_down = np.asarray(upright.transpose(Image.Transpose.ROTATE_180), dtype=np.float64)
    assert np.abs(got - want).mean() < 4.0  # JPEG loss only
    assert np.abs(got - upside_down).mean() > 40.0  # not turned the wrong way
    assert any("EXIF orientation 6" in note for note in decoded.notes)


def test_images_without_exif_orientation_get_no_orientation_note(tmp_path, gray):
    path = tmp_path / "plain.png"
    Image.fromarray(gray).save(path)
    assert _load_strict(path).notes == ()


def test_multi_frame_tiff_uses_the_first_frame_and_says_so(tmp_path, gray):
    frames = [Image.fromarray(gray), Image.fromarray(255 - gray), Image.fromarray(gray // 2)]
    path = tmp_path / "stack.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    decoded = _load_strict(path)
    np.testing.assert_array_equal(_pixels(decoded), gray)
    assert any("frame 1 of 3" in note for note in decoded.notes)


# --- files that are not usable images ------------------------------------------------------


def _zero_bytes(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _text_renamed_png(path: Path) -> Path:
    path.write_text("patient list\nIMG000001, femur\n", encoding="utf-8")
    return path


def _lfs_pointer(path: Path) -> Path:
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 12345\n",
        encoding="utf-8",
    )
    return path


def _truncated(path: Path, fmt: str) -> Path:
    noise = np.random.default_rng(5).integers(0, 256, (200, 160), dtype=np.uint8)
    Image.fromarray(noise).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _missing(path: Path) -> Path:
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _broken_symlink(path: Path) -> Path:
    path.symlink_to(path.parent / "gone.png")
    return path


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("zero.png", _zero_bytes, "empty file"),
        ("notes.png", _text_renamed_png, "not an image file"),
        ("lfs.png", _lfs_pointer, "git lfs pull"),
        ("cut.jpg", lambda p: _truncated(p, "JPEG"), "truncated"),
        ("cut.png", lambda p: _truncated(p, "PNG"), "truncated"),
        ("missing.png", _missing, "no such file"),
        ("folder.png", _folder, "is a folder"),
        ("link.png", _broken_symlink, "broken symbolic link"),
    ],
    ids=[
        "zero-byte",
        "text",
        "lfs-pointer",
        "truncated-jpeg",
        "truncated-png",
        "missing",
        "directory",
        "broken-symlink",
    ],
)
def test_unusable_files_raise_input_error_naming_file_and_cause(tmp_path, name, make, message):
    path = make(tmp_path / name)
    with pytest.raises(InputError) as caught:
        _load_strict(path)
    text = str(caught.value)
    assert str(path) in text
    assert message in text
    assert "\n" not in text


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims a size; no pixel data, so decoding it would fail differently."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    ("width", "height", "limits", "message"),
    [
        (10, 10, DecodeLimits(), "not a plausible radiograph"),
        (400, 16, DecodeLimits(), "not a plausible radiograph"),
        (16, 400, DecodeLimits(), "not a plausible radiograph"),
        (200, 200, DecodeLimits(max_pixels=10_000), "exceeds the limit of 10,000"),
        # Pillow's own bomb warning (89 M pixels) may come first where warnings are errors.
        (12_000, 9_000, DecodeLimits(), "exceeds the limit of 100,000,000|decompression bomb"),
        (30_000, 30_000, DecodeLimits(), "decompression bomb"),
    ],
    ids=[
        "tiny",
        "wide-strip",
        "tall-strip",
        "over-configured-limit",
        "over-default-limit",
        "pillow-bomb",
    ],
)
def test_absurd_shapes_are_refused_before_decoding(tmp_path, width, height, limits, message):
    path = _png_header_only(tmp_path / "absurd.png", width, height)
    with pytest.raises(InputError, match=message):
        _load_strict(path, limits)


def test_shapes_at_the_limits_are_accepted(tmp_path):
    path = tmp_path / "edge.png"
    noise = np.random.default_rng(0).integers(0, 256, (16, 320), dtype=np.uint8)
    Image.fromarray(noise).save(path)  # min side, aspect exactly 20
    assert _load_strict(path).image.size == (320, 16)


# --- in-memory images -------------------------------------------------------------------------


def test_decode_pil_normalises_like_load_image(tmp_path, make_phantom):
    deep = make_phantom(40, 40, seed=8, depth=4095)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    with Image.open(path) as opened:
        from_memory = decode_pil(opened)
        np.testing.assert_array_equal(_pixels(from_memory), _pixels(load_image(path)))


def test_decode_pil_refuses_unsupported_modes_with_input_error():
    with pytest.raises(InputError, match="unsupported image mode"):
        decode_pil(Image.new("RGBX", (32, 32)))


# --- inputs the fuzzer (tests/fuzz/fuzz_decode.py) once broke the decode path with -----------

FUZZ_REGRESSIONS = sorted((Path(__file__).parents[1] / "fuzz" / "regressions").glob("*.bin"))


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow warns, then fails; we refuse
@pytest.mark.parametrize("found", FUZZ_REGRESSIONS, ids=lambda p: p.stem)
def test_fuzzer_findings_are_refused_with_input_error(tmp_path, found):
    path = tmp_path / "input"
    path.write_bytes(found.read_bytes())
    with pytest.raises(InputError) as caught:
        load_image(path)  # not strict: corrupt EXIF makes Pillow warn before it fails
    assert str(path) in str(caught.value)


# --- the format allowlist -------------------------------------------------------------------

NOT_ALLOWED = ["EPS", "GIF", "WEBP", "ICO", "PPM", "PCX", "DDS", "BLP", "QOI", "JPEG2000", "AVIF"]


def _saved_as(fmt: str) -> bytes:
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 32, 3), dtype=np.uint8))
    if fmt == "BLP":
        image = image.convert("P")
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, KeyError, ValueError) as exc:  # no encoder in this Pillow build
        pytest.skip(f"Pillow cannot write {fmt} here ({exc})")
    return buffer.getvalue()


@pytest.fixture
def only_allowed_plugins(monkeypatch):
    """Any plugin outside the allowlist that is asked to parse a file fails the test."""
    Image.init()

    def forbidden(name):
        def factory(*args, **kwargs):
            raise AssertionError(f"the {name} plugin parsed the file")

        return factory

    for name, (_factory, accept) in list(Image.OPEN.items()):
        if name not in pillow_formats() and name != "MPO":
            monkeypatch.setitem(Image.OPEN, name, (forbidden(name), accept))


@pytest.mark.parametrize("fmt", NOT_ALLOWED)
def test_other_formats_are_refused_by_their_real_format_without_parsing(
    tmp_path, only_allowed_plugins, fmt
):
    path = tmp_path / "scan.png"  # the suffix lies, as in the campaign's EPS named .png
    path.write_bytes(_saved_as(fmt))
    with pytest.raises(InputError) as caught:
        _load_strict(path)
    text = str(caught.value)
    article = "an" if fmt in ("EPS", "ICO", "AVIF") else "a"
    assert text.startswith(f"{path}: is {article} {fmt} file, not a radiograph format btxrd")
    assert "(JPEG, PNG, TIFF, BMP, DICOM); convert it" in text


def _dds_header(path: Path) -> Path:
    """The campaign's 232-byte DDS header named b.png (Pillow raised NotImplementedError)."""
    header = struct.pack("<4sIII", b"DDS ", 124, 0x1007, 64) + struct.pack("<I", 64)
    header += b"\0" * (4 + 4 + 4 + 44)  # pitch, depth, mipmaps, reserved
    header += struct.pack("<II4sIIIII", 32, 0x4, b"DX10", 0, 0, 0, 0, 0)  # pixel format
    header += b"\0" * 20  # caps
    header += struct.pack("<IIIII", 999, 3, 0, 1, 0)  # DX10: an unknown DXGI format
    path.write_bytes(header + b"\0" * (232 - len(header)))
    return path


def test_dds_header_named_png_is_refused_as_dds(tmp_path, only_allowed_plugins):
    path = _dds_header(tmp_path / "b.png")
    assert path.stat().st_size == 232
    with pytest.raises(InputError, match=r"b\.png: is a DDS file, not a radiograph format"):
        _load_strict(path)


def test_not_implemented_in_an_allowed_plugin_is_an_input_error(tmp_path, gray, monkeypatch):
    path = tmp_path / "a.png"
    Image.fromarray(gray).save(path)

    def unimplemented(self):
        raise NotImplementedError("this PNG feature")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", unimplemented)
    with pytest.raises(InputError, match="uses an image feature Pillow cannot decode"):
        _load_strict(path)


def test_image_suffixes_are_the_allowlist():
    """The folder walker's suffixes name exactly the allowed formats, each of them."""
    registered = Image.registered_extensions()
    pillow_suffixes = image_suffixes(PILLOW)
    assert {registered[s] for s in pillow_suffixes} == set(pillow_formats())
    assert set(image_suffixes(DICOM)) <= set(image_suffixes())
    assert set(image_suffixes()) == set(pillow_suffixes) | set(image_suffixes(DICOM))


# btxrd-run with WebP added to the registry (one line, as a new format is added) and nothing
# else changed: the folder walker picks the file up, Pillow may open it, it is classified.
_WITH_WEBP = """
import sys
from btxrd.runtime.decode import formats
formats.FORMATS.append(formats.ImageFormat("WEBP", (".webp",)))
from btxrd.runtime.cli.run import main
main(sys.argv[1:])
"""


def test_a_pillow_format_is_added_by_one_line_in_the_registry(tmp_path, tiny_onnx, gray):
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(gray).save(folder / "scan.webp", lossless=True)
    without = subprocess.run(
        [sys.executable, "-m", "btxrd.runtime.cli.run", "--model", tiny_onnx, "--json", "-q",
         folder / "scan.webp"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert without.returncode == 1 and "is a WEBP file" in without.stderr
    done = subprocess.run(
        [sys.executable, "-c", _WITH_WEBP, "--model", tiny_onnx, "--json", "-q", "--dir", folder],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)["results"]
    assert record["image_name"] == "scan.webp" and record["prediction"] is not None


def test_folder_walker_picks_up_allowed_suffixes_only(tmp_path):
    for name in ("a.jpg", "b.jpeg", "c.png", "d.tif", "e.tiff", "f.bmp", "g.dcm", "h.dicom"):
        (tmp_path / name).write_bytes(b"x")
    for name in ("i.gif", "j.webp", "k.eps", "l.dds", "m.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.name for p in collect_folder(tmp_path, recursive=False)]
    assert found == ["a.jpg", "b.jpeg", "c.png", "d.tif", "e.tiff", "f.bmp", "g.dcm", "h.dicom"]


# --- valid files Pillow's limits called corrupt ----------------------------------------------


@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt"])
def test_png_with_a_1_mb_text_chunk_is_read(tmp_path, gray, kind):
    info = PngImagePlugin.PngInfo()
    text = "0123456789abcdef" * (1 << 16) + "!"  # just over 1 MB
    if kind == "iTXt":
        info.add_itxt("Comment", text, zip=True)
    else:
        info.add_text("Comment", text, zip=kind == "zTXt")
    path = tmp_path / "text.png"
    Image.fromarray(gray).save(path, pnginfo=info)
    np.testing.assert_array_equal(_pixels(_load_strict(path)), gray)


# --- blank images ---------------------------------------------------------------------------


def _blank_file(tmp_path: Path, kind: str) -> Path:
    if kind == "black":
        path, image = tmp_path / "black.png", Image.new("L", (64, 48), 0)
    elif kind == "white-jpeg":
        path, image = tmp_path / "white.jpg", Image.new("RGB", (64, 48), (255, 255, 255))
    elif kind == "transparent":
        noise = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        path, image = tmp_path / "clear.png", Image.fromarray(np.dstack([noise, noise[..., 0] * 0]))
    elif kind == "constant-float":
        path, image = tmp_path / "flat.tif", Image.fromarray(np.full((48, 64), 0.37, np.float32))
    elif kind == "constant-16-bit":
        path, image = tmp_path / "flat.png", Image.fromarray(np.full((48, 64), 1234, np.uint16))
    elif kind == "one-colour":
        path, image = tmp_path / "red.bmp", Image.new("RGB", (64, 48), (200, 10, 10))
    else:  # nearly blank: one pixel of 1, the rest 0
        values = np.zeros((48, 64), np.uint8)
        values[3, 3] = 1
        path, image = tmp_path / "speck.png", Image.fromarray(values)
    image.save(path)
    return path


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("black", "every pixel is 0)"),
        ("white-jpeg", "every pixel is (255, 255, 255))"),
        ("transparent", "every pixel is (0, 0, 0))"),
        ("constant-float", "every pixel is 0.37)"),
        ("constant-16-bit", "every pixel is 1234)"),
        ("one-colour", "every pixel is (200, 10, 10))"),
        ("speck", "nearly every pixel is 0; standard deviation"),
    ],
)
def test_blank_images_are_refused(tmp_path, kind, shown):
    path = _blank_file(tmp_path, kind)
    with pytest.raises(InputError) as caught:
        _load_strict(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: the image is blank (")
    assert shown in text and text.endswith("; nothing to classify")


def test_decode_pil_refuses_a_blank_image_too():
    with pytest.raises(InputError, match="blank"):
        decode_pil(Image.new("L", (64, 64), 7))


def _std(image: Image.Image) -> float:
    return float(np.asarray(image, dtype=np.float64).std(axis=(0, 1)).max())


def test_real_radiographs_are_far_from_blank(make_phantom):
    """The threshold's margin: phantoms and the shipped samples spread over tens of levels."""
    samples = sorted((REPO_ROOT / "models" / "samples").glob("*.jp*g"))
    assert samples, "models/samples holds the shipped sample radiographs"
    spreads = [_std(load_image(p).image) for p in samples]
    for seed in range(20):
        for depth in (255, 4095):
            phantom = Image.fromarray(make_phantom(96, 80, seed=seed, depth=depth))
            spreads.append(_std(decode_pil(phantom).image))
    assert min(spreads) > 20 * BLANK_STD, min(spreads)


def test_one_grey_level_of_spread_is_not_blank(tmp_path):
    values = np.zeros((48, 64), np.uint8)
    values[:, 32:] = 2  # standard deviation exactly 1 level
    path = tmp_path / "faint.png"
    Image.fromarray(values).save(path)
    np.testing.assert_array_equal(_pixels(_load_strict(path)), values)


# --- memory ---------------------------------------------------------------------------------


def test_16_bit_scaling_allocates_no_float64_copy(tmp_path):
    """numpy's allocations are traced: decoding a 2000 x 2000 16-bit PNG allocates the 8-bit
    output and bands of rows, never 8 bytes a pixel for the whole image (32 MB here)."""
    values = np.tile(np.arange(2000, dtype=np.uint16) * 2, (2000, 1))
    path = tmp_path / "big16.png"
    Image.fromarray(values).save(path, compress_level=1)
    tracemalloc.start()
    try:
        decoded = load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = np.rint(values.astype(np.float64) * 255.0 / 3998.0).astype(np.uint8)
    np.testing.assert_array_equal(_pixels(decoded), expected)
    assert peak < 2.5 * values.size, peak  # output (1 byte a pixel) plus a few MB of bands


def _near_threshold_images() -> list[tuple[str, np.ndarray]]:
    """Images whose spread sits just either side of BLANK_STD, with the variation where the
    blank check's sampled bands of rows see it, where they miss it, and spread evenly."""
    rng = np.random.default_rng(7)
    height, width = 640, 480
    band_rows = np.zeros(height, bool)
    rows = height // 32
    for i in range(4):
        top = (2 * i + 1) * height // 8
        band_rows[top : top + rows] = True
    images = []
    for scale in (0.9, 1.1):
        noise = rng.normal(0.0, 1.0, (height, width))
        for name, where in (("bands only", band_rows), ("outside bands", ~band_rows)):
            values = np.where(where[:, None], noise, 0.0)
            # Scaled so the whole image's standard deviation is `scale` levels (before rounding).
            values = 128 + values * scale / values.std()
            images.append((f"{name} x{scale}", np.clip(np.rint(values), 0, 255).astype(np.uint8)))
        spread = 128 + noise * scale
        images.append((f"everywhere x{scale}", np.clip(np.rint(spread), 0, 255).astype(np.uint8)))
        colour = np.full((height, width, 3), 90, np.uint8)
        colour[..., 2] = images[-1][1]  # one channel varies, the others are flat
        images.append((f"blue only x{scale}", colour))
    return images


def _spread(values: np.ndarray) -> float:
    return float(values.reshape(-1, values.shape[-1] if values.ndim == 3 else 1).std(axis=0).max())


NEAR_THRESHOLD = _near_threshold_images()


def test_near_threshold_images_lie_either_side():
    below = sorted(name for name, v in NEAR_THRESHOLD if _spread(v) < BLANK_STD)
    assert below == ["bands only x0.9", "blue only x0.9", "everywhere x0.9", "outside bands x0.9"]


@pytest.mark.parametrize("values", [pytest.param(v, id=name) for name, v in NEAR_THRESHOLD])
def test_blank_verdict_is_the_whole_images_spread(values):
    """The quick look at a few bands of rows never changes the verdict: an image is refused
    exactly when no channel of the whole image spreads by BLANK_STD."""
    image = Image.fromarray(values)
    if _spread(values) >= BLANK_STD:
        decode_pil(image)
    else:
        with pytest.raises(InputError, match="blank"):
            decode_pil(image)


# A bug in btxrd's own decode code (here: a call that makes it raise TypeError or AttributeError
# inside a decoder's net) must reach the per-input fence that says "a btxrd bug: please report
# it", not be the user's "corrupt image" or "malformed DICOM".
_PLANTED_BUG = """
import sys
from btxrd.runtime.decode import decoded, dicom, pillow
def broken_pillow(opened):
    return decoded.check_size(None, "scan.png", None)  # TypeError inside btxrd's own code
def broken_dicom(ds, pixels, path):
    return dicom._modality(None, path, [])  # AttributeError inside btxrd's own code
pillow.wide_rawmode = broken_pillow
dicom._to_image = broken_dicom
from btxrd.runtime.cli.run import main
main(sys.argv[1:])
"""


def _png(path: Path, gray: np.ndarray) -> Path:
    Image.fromarray(gray).save(path.with_suffix(".png"))
    return path.with_suffix(".png")


def _dicom(path: Path, gray: np.ndarray) -> Path:
    pytest.importorskip("pydicom")
    from dicom_files import write_dicom

    return write_dicom(path.with_suffix(".dcm"), gray.astype(np.uint16) * 16)


@pytest.mark.parametrize("write", [_png, _dicom], ids=["pillow", "dicom"])
def test_a_btxrd_bug_in_decoding_is_an_internal_error_not_a_corrupt_file(
    tmp_path, gray, tiny_onnx, write
):
    path = write(tmp_path / "scan", gray)
    done = subprocess.run(
        [sys.executable, "-c", _PLANTED_BUG, "--model", tiny_onnx, "--json", "-q", path],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr
    assert "corrupt" not in done.stdout + done.stderr
    assert "malformed" not in done.stdout + done.stderr
    assert "This is a btxrd bug: please report it" in done.stderr
