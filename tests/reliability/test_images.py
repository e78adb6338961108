"""Bad and unusual image files in a batch, through ``btxrd-run``: the batch goes on, the bad file
gets an error record and one clear stderr line naming it and the cause, the run exits 1; files
that can be converted the one documented way are classified, with a note where it matters."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_support import (
    assert_one_clear_line,
    peak_rss_kib,
    records_of,
    run_cli,
    run_process,
)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header claiming a size, with a tiny compressed stream behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def _noise(height: int = 200, width: int = 160) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (height, width), dtype=np.uint8)


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def text_renamed(path: Path) -> None:
    path.write_text("patient list\nIMG000001, femur\n", encoding="utf-8")


def html_renamed(path: Path) -> None:
    path.write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>", encoding="utf-8")


def lfs_pointer(path: Path) -> None:
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 12345\n",
        encoding="utf-8",
    )


def truncated(fmt: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        Image.fromarray(_noise()).save(path, format=fmt)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return make


def corrupt_png_stream(path: Path) -> None:
    """Whole file, valid chunk CRCs, but the zlib stream inside IDAT is garbage."""
    ihdr = struct.pack(">IIBBBBB", 160, 200, 8, 0, 0, 0, 0)
    good = zlib.compress(b"".join(b"\x00" + row.tobytes() for row in _noise()))
    bad = good[:2] + bytes(b ^ 0x5A for b in good[2:])
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", bad) + _chunk(b"IEND", b"")
    )


def bomb(path: Path) -> None:
    path.write_bytes(_png_claiming(40_000, 40_000))


def one_pixel(path: Path) -> None:
    Image.new("L", (1, 1), 128).save(path)


def strip_10000_by_3(path: Path) -> None:
    Image.new("L", (10_000, 3), 128).save(path)


def float_tiff(value: float) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        pixels = _noise().astype(np.float32)
        pixels[5, 5] = value
        Image.fromarray(pixels).save(path)

    return make


def broken_symlink(path: Path) -> None:
    path.symlink_to(path.parent / "gone.png")


def dicom_compressed(path: Path) -> None:
    pytest.importorskip("pydicom")
    from dicom_files import ramp, write_dicom
    from pydicom.uid import JPEGLSLossless

    try:
        import jpeg_ls  # noqa: F401

        pytest.skip("a JPEG-LS decoder is installed here")
    except ImportError:
        write_dicom(path, ramp(), syntax=JPEGLSLossless)


def dicom_compressed_damaged(path: Path) -> None:
    """JPEG 2000 syntax, but the stream is not JPEG 2000: Pillow's decoder (through pydicom)
    is there and fails."""
    pytest.importorskip("pydicom")
    from dicom_files import ramp, write_dicom
    from pydicom.uid import JPEG2000Lossless

    write_dicom(path, ramp(), syntax=JPEG2000Lossless)


def dicom_report(path: Path) -> None:
    pytest.importorskip("pydicom")
    from dicom_files import COMPREHENSIVE_SR, write_dicom

    write_dicom(path, None, sop_class=COMPREHENSIVE_SR)


def other_format(fmt: str) -> Callable[[Path], None]:
    """A real file of a format outside the allowlist, under the name the case gives it."""

    def make(path: Path) -> None:
        image = Image.fromarray(np.dstack([_noise()] * 3))
        try:
            image.convert("P" if fmt == "BLP" else "RGB").save(path, format=fmt)
        except (OSError, KeyError, ValueError) as exc:
            pytest.skip(f"Pillow cannot write {fmt} here ({exc})")

    return make


def dds_header(path: Path) -> None:
    """The campaign's 232-byte DDS header named b.png (an internal error before)."""
    header = struct.pack("<4sIIII", b"DDS ", 124, 0x1007, 64, 64) + b"\0" * 56
    header += struct.pack("<II4sIIIII", 32, 0x4, b"DX10", 0, 0, 0, 0, 0) + b"\0" * 20
    header += struct.pack("<IIIII", 999, 3, 0, 1, 0)
    path.write_bytes(header + b"\0" * (232 - len(header)))


def blank(kind: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        if kind == "black":
            Image.new("L", (160, 200), 0).save(path)
        elif kind == "white":
            Image.new("RGB", (160, 200), (255, 255, 255)).save(path)
        elif kind == "transparent":
            colour = np.dstack([_noise()] * 3)
            Image.fromarray(np.dstack([colour, np.zeros_like(_noise())])).save(path)
        else:
            Image.fromarray(np.full((200, 160), 0.37, np.float32)).save(path)

    return make


def dicom_malformed(**changes) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        pytest.importorskip("pydicom")
        from dicom_files import ramp, rewrite, write_dicom

        rewrite(write_dicom(path, ramp()), **changes)

    return make


def dicom_deflated_bomb(path: Path) -> None:
    """The campaign's 220 KB of deflated zeros declaring 10630 x 10630 16-bit pixels: refused
    from the header (it used to inflate and decode to 2.8 GB before the refusal)."""
    pytest.importorskip("pydicom")
    from dicom_files import write_deflated_zeros

    write_deflated_zeros(path, 10630, 10630)


BAD = [
    ("zero-byte", "zero.png", zero_bytes, "empty file"),
    ("text-as-png", "notes.png", text_renamed, "not an image file"),
    ("html-as-png", "page.png", html_renamed, "not an image file"),
    ("lfs-pointer", "lfs.png", lfs_pointer, "git lfs pull"),
    ("truncated-jpeg", "cut.jpg", truncated("JPEG"), "truncated"),
    ("truncated-png", "cut.png", truncated("PNG"), "truncated"),
    ("corrupt-png-stream", "garbled.png", corrupt_png_stream, "corrupt"),
    ("decompression-bomb", "bomb.png", bomb, "decompression bomb"),
    ("1x1", "dot.png", one_pixel, "not a plausible radiograph"),
    ("10000x3", "strip.png", strip_10000_by_3, "not a plausible radiograph"),
    ("float-tiff-nan", "nan.tif", float_tiff(np.nan), "NaN or infinity"),
    ("float-tiff-inf", "inf.tif", float_tiff(np.inf), "NaN or infinity"),
    ("broken-symlink", "link.png", broken_symlink, "broken symbolic link"),
    ("dicom-compressed", "jls.dcm", dicom_compressed, "no decoder installed; install one with"),
    ("dicom-compressed-damaged", "j2k.dcm", dicom_compressed_damaged, "could not be decoded"),
    ("dicom-structured-report", "report.dcm", dicom_report, "has no image"),
    # Formats outside the allowlist, named .png: refused by their real format, never parsed.
    ("eps-as-png", "scan.png", other_format("EPS"), "is an EPS file, not a radiograph format"),
    ("dds-header-as-png", "b.png", dds_header, "is a DDS file, not a radiograph format"),
    ("blp-as-png", "scan.png", other_format("BLP"), "is a BLP file, not a radiograph format"),
    ("avif-as-png", "scan.png", other_format("AVIF"), "is an AVIF file, not a radiograph format"),
    ("gif-as-png", "scan.png", other_format("GIF"), "is a GIF file, not a radiograph format"),
    # Images with no content.
    ("all-black", "black.png", blank("black"), "the image is blank (every pixel is 0)"),
    ("all-white", "white.jpg", blank("white"), "blank (every pixel is (255, 255, 255))"),
    ("transparent", "clear.png", blank("transparent"), "blank (every pixel is (0, 0, 0))"),
    ("constant-float", "flat.tif", blank("float"), "blank (every pixel is 0.37)"),
    # Malformed uncompressed DICOM: never told to install a JPEG decoder.
    ("dicom-pixels-short", "short.dcm", dicom_malformed(PixelData=b"\0" * 100), "malformed"),
    ("dicom-bits-12", "b12.dcm", dicom_malformed(BitsAllocated=12), "malformed DICOM header"),
    ("dicom-stored-20", "s20.dcm", dicom_malformed(BitsStored=20), "malformed DICOM pixel"),
    ("dicom-representation-5", "r5.dcm", dicom_malformed(PixelRepresentation=5), "malformed"),
    ("dicom-samples-2", "spp2.dcm", dicom_malformed(SamplesPerPixel=2), "malformed DICOM"),
    ("dicom-frames-1000", "f.dcm", dicom_malformed(NumberOfFrames=1000), "malformed DICOM"),
    ("dicom-rows-missing", "norows.dcm", dicom_malformed(Rows=None), "Rows is missing"),
    ("dicom-deflated-bomb", "deflated.dcm", dicom_deflated_bomb, "refused before decoding"),
]


@pytest.mark.parametrize(("name", "make", "cause"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_image_gets_an_error_record_and_the_batch_goes_on(
    tiny_onnx, good_images, tmp_path, name, make, cause
):
    case = tmp_path / "inbox" / name
    case.parent.mkdir()
    make(case)
    out = tmp_path / "results.jsonl"
    inputs = [good_images[0], case, good_images[1]]
    result = run_cli("--model", tiny_onnx, "--jsonl", "--output", out, *inputs)
    assert result.exit_code == 1
    assert_one_clear_line(result.stderr, str(case), cause)
    records = records_of(out)
    assert [r["path"] for r in records] == [str(p) for p in inputs]
    assert records[1]["prediction"] is None and records[1]["scores"] == {}
    assert cause in records[1]["error"]
    if "malformed" in cause:  # never sent to install a decoder it does not need
        assert "install" not in records[1]["error"]
    for good in (records[0], records[2]):
        assert good["error"] is None and good["prediction"] is not None


def test_decompression_bomb_is_refused_with_flat_memory(tiny_onnx, tmp_path):
    """Peak memory of the whole process stays that of a run on a small image: the 1.6 G-pixel
    claim is refused from the header, nothing is allocated for it."""
    small = tmp_path / "small.png"
    Image.fromarray(_noise()).save(small)
    big = tmp_path / "bomb.png"
    bomb(big)

    def peak_kib(image: Path) -> int:
        return peak_rss_kib("--model", tiny_onnx, "--quiet", image)

    assert peak_kib(big) < peak_kib(small) + 20_000  # within 20 MB of a normal run


CONVERTED = [
    # (id, file name, how to write it, note expected in the record or None)
    ("multi-frame-tiff", "stack.tif", "frames", "frame 1 of 3"),
    ("cmyk-jpeg", "cmyk.jpg", "CMYK", None),
    ("rgba-png", "alpha.png", "RGBA", None),
    ("palette-transparency-png", "palette.png", "P", None),
    ("exif-rotated-jpeg", "rotated.jpg", "exif", "EXIF orientation"),
]


def _write_converted(path: Path, kind: str) -> None:
    gray = Image.fromarray(_noise())
    if kind == "frames":
        gray.save(path, save_all=True, append_images=[gray.rotate(90), gray.rotate(180)])
    elif kind == "CMYK":
        gray.convert("CMYK").save(path)
    elif kind == "RGBA":
        image = gray.convert("RGBA")
        image.putalpha(Image.fromarray(_noise()[::-1].copy()))
        image.save(path)
    elif kind == "P":
        image = gray.convert("P")
        image.info["transparency"] = 0
        image.save(path, transparency=0)
    else:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        gray.save(path, exif=exif)


@pytest.mark.parametrize(
    ("name", "kind", "note"), [c[1:] for c in CONVERTED], ids=[c[0] for c in CONVERTED]
)
def test_unusual_images_are_converted_the_documented_way_without_warnings(
    tiny_onnx, tmp_path, name, kind, note
):
    path = tmp_path / name
    _write_converted(path, kind)
    out = tmp_path / "results.jsonl"
    result = run_cli("--model", tiny_onnx, "--jsonl", "--output", out, path)
    assert result.exit_code == 0, result.stderr
    assert "Warning" not in result.stderr and "error" not in result.stderr
    (record,) = records_of(out)
    assert record["error"] is None and record["prediction"] is not None
    if note:
        assert any(note in n for n in record["notes"]), record["notes"]


def test_exif_rotation_applies_before_preprocessing_and_to_the_cam(tiny_onnx, tmp_path):
    """The EXIF-rotated file scores exactly as the same pixels stored upright, and its CAM
    overlay has the upright size."""
    upright = tmp_path / "upright.png"
    rotated = tmp_path / "rotated.png"
    pixels = _noise(200, 160)
    Image.fromarray(pixels).save(upright)
    exif = Image.Exif()
    exif[0x0112] = 6  # the stored pixels must be turned 90 degrees clockwise to display
    Image.fromarray(np.rot90(pixels, k=1).copy()).save(rotated, exif=exif)
    cams = tmp_path / "cams"
    out = tmp_path / "results.jsonl"
    result = run_cli(
        "--model",
        tiny_onnx,
        "--jsonl",
        "--output",
        out,
        "--cam",
        "--cam-dir",
        cams,
        upright,
        rotated,
    )
    assert result.exit_code == 0, result.stderr
    first, second = records_of(out)
    assert first["scores"] == pytest.approx(second["scores"], abs=1e-6)
    with (
        Image.open(cams / "rotated_cam.png") as overlay,
        Image.open(cams / "upright_cam.png") as up,
    ):
        # The overlay of the rotated file is the upright one's: same size, same pixels above
        # the caption band (which differs only in the file name it shows).
        assert overlay.width == 160 and overlay.height > 200 and overlay.size == up.size
        rotated_view = np.asarray(overlay)[:200].astype(int)
        upright_view = np.asarray(up)[:200].astype(int)
        assert np.abs(rotated_view - upright_view).max() <= 2


@pytest.mark.parametrize(
    "name", ["scan with spaces.png", "röntgen_膝.png", "-leading-dash.png"], ids=repr
)
def test_awkward_file_names_are_classified(tiny_onnx, tmp_path, monkeypatch, name):
    Image.fromarray(_noise()).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results.jsonl"
    # "--" ends the options, as for every Unix command, so "-leading-dash.png" is a file.
    by_name = run_cli("--model", tiny_onnx, "--jsonl", "--output", out, "--", name)
    assert by_name.exit_code == 0, by_name.stderr
    (record,) = records_of(out)
    assert record["path"] == name and record["image_name"] == name
    by_dir = run_cli("--model", tiny_onnx, "--jsonl", "--dir", tmp_path)
    assert by_dir.exit_code == 0, by_dir.stderr
    assert [json.loads(line)["image_name"] for line in by_dir.stdout.splitlines()] == [name]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_unreadable_file_gets_an_error_record(tiny_onnx, good_images, tmp_path):
    """Permissions deny reading. Root reads everything, so the command runs in a new user
    namespace (``unshare --user``): there the owner's mode bits hold even for root."""
    secret = tmp_path / "secret.png"
    Image.fromarray(_noise()).save(secret)
    secret.chmod(0o000)
    done = run_process(
        "--model", tiny_onnx, "--jsonl", good_images[0], secret, wrap=["unshare", "--user"]
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert_one_clear_line(stderr, str(secret), "permission denied")
    first, second = (json.loads(line) for line in done.stdout.decode().splitlines())
    assert first["error"] is None and str(secret) in second["error"]
