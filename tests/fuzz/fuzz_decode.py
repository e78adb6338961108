"""Fuzz btxrd's decode path with atheris: mutated image files go through ``load_image`` and
``preprocess`` exactly as ``btxrd-run`` reads a file. Every input must either give a finite
float32 tensor of the contract's shape or raise one of btxrd's own errors (``BtxrdError``);
anything else (a Pillow or pydicom exception leaking, a crash, a NaN tensor) stops the run as a
failure, and libFuzzer saves the input as ``results/fuzz/crash-*``: keep it as a regression in
``tests/fuzz/regressions/NAME.bin`` (replayed by ``tests/runtime/test_imageio.py``).

Run with ``make fuzz`` (200,000 executions; not part of CI). The seeds are every format and
sample layout btxrd accepts (JPEG, PNG 8/16-bit gray and colour, TIFF 8/16/32-bit, float,
WhiteIsZero, signed, compressed, big-endian, BMP, DICOM plain, deflated, multi-frame, windowed);
they are written to ``results/fuzz/corpus`` on every start. Pillow's allowed plugins and pydicom
are instrumented too, so their header parsers guide the mutations. The tally is printed and
written to ``results/fuzz/summary.json``.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections import Counter
from pathlib import Path

import atheris
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the DICOM writer

with atheris.instrument_imports():
    import pydicom
    import pydicom.filereader
    import pydicom.pixels
    from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

    from btxrd.runtime.decode import dicom  # noqa: F401  (instrumented before its first use)
    from btxrd.runtime.decode.image import load_image
    from btxrd.runtime.decode.quiet import quiet_decoder_warnings
    from btxrd.runtime.errors import BtxrdError
    from btxrd.runtime.model.contract import Preprocessing
    from btxrd.runtime.model.preprocess import preprocess

OUT = Path("results/fuzz")
PREP = Preprocessing(image_size=(64, 64))
tally: Counter[str] = Counter()
started = time.monotonic()
target_runs = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("-atheris_runs=")), 0)
scratch = OUT / "input"
_PLUGINS = (BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin, pydicom)


def seeds() -> dict[str, bytes]:
    """Small files of every kind the decoder accepts; the fuzzer mutates them."""
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 32), dtype=np.uint8)
    deep = gray.astype(np.uint16) * 16  # 12-bit data
    rgb = np.dstack([gray, gray[::-1], 255 - gray])
    exif = Image.Exif()
    exif[0x0112] = 6
    pillow: dict[str, tuple[Image.Image, dict]] = {
        "gray.png": (Image.fromarray(gray), {}),
        "gray16.png": (Image.fromarray(deep), {}),
        "palette.png": (Image.fromarray(gray).convert("P"), {"transparency": 0}),
        "rgba.png": (Image.fromarray(np.dstack([rgb, gray])), {}),
        "exif.png": (Image.fromarray(gray), {"exif": exif}),
        "gray.jpg": (Image.fromarray(gray), {"quality": 80}),
        "rgb.jpg": (Image.fromarray(rgb), {"quality": 80}),
        "cmyk.jpg": (Image.fromarray(rgb).convert("CMYK"), {"quality": 80}),
        "exif.jpg": (Image.fromarray(gray), {"exif": exif}),
        "gray.bmp": (Image.fromarray(gray), {}),
        "rgb.bmp": (Image.fromarray(rgb), {}),
        "gray.tif": (Image.fromarray(gray), {}),
        "deflate.tif": (Image.fromarray(gray), {"compression": "tiff_adobe_deflate"}),
        "gray16.tif": (Image.fromarray(deep), {}),
        "float.tif": (Image.fromarray(gray.astype(np.float32) / 7), {}),
        "int32.tif": (Image.fromarray(gray.astype(np.int32) * 1000 - 70_000), {}),
        "frames.tif": (
            Image.fromarray(gray),
            {"save_all": True, "append_images": [Image.new("L", (32, 40), 9)]},
        ),
        "exif.tif": (Image.fromarray(gray), {"exif": exif}),
    }
    found: dict[str, bytes] = {}
    for name, (image, options) in pillow.items():
        buffer = io.BytesIO()
        image.save(buffer, format=_format(name), **options)
        found[name] = buffer.getvalue()
    found.update(_png16_colour(deep))
    found.update(_tifffile_seeds(gray, deep))
    found.update(_dicom_seeds(deep))
    return found


def _format(name: str) -> str:
    return {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP"}[name.rsplit(".", 1)[1]]


def _png16_colour(deep: np.ndarray) -> dict[str, bytes]:
    try:
        import png  # pypng, in the dev extra
    except ImportError:
        return {}
    out = {}
    for name, planes, alpha in (("rgb16.png", 3, False), ("la16.png", 1, True)):
        data = np.dstack([deep] * (planes + alpha))
        buffer = io.BytesIO()
        png.Writer(32, 40, greyscale=planes == 1, alpha=alpha, bitdepth=16).write(
            buffer, data.reshape(40, -1).tolist()
        )
        out[name] = buffer.getvalue()
    return out


def _tifffile_seeds(gray: np.ndarray, deep: np.ndarray) -> dict[str, bytes]:
    try:
        import tifffile  # in the dev extra
    except ImportError:
        return {}
    cases = {
        "white16.tif": (deep, {"photometric": "miniswhite"}),
        "int8.tif": (gray.astype(np.int8), {}),
        "uint32.tif": (deep.astype(np.uint32) << 16, {}),
        "be-int16.tif": (deep.astype(np.int16) - 2000, {"byteorder": ">", "compression": "zlib"}),
        "rgb16.tif": (np.dstack([deep] * 3), {"photometric": "rgb"}),
        "orient6.tif": (gray, {"extratags": [(274, "H", 1, 6, True)]}),
        "tiled.tif": (np.tile(gray, (2, 2)), {"tile": (16, 16)}),
        "planar.tif": (np.stack([gray] * 3), {"photometric": "rgb", "planarconfig": "separate"}),
    }
    out = {}
    for name, (data, options) in cases.items():
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, data, **options)
        out[name] = buffer.getvalue()
    return out


def _dicom_seeds(deep: np.ndarray) -> dict[str, bytes]:
    from dicom_files import write_dicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

    cases = {
        "plain.dcm": {},
        "implicit.dcm": {"syntax": ImplicitVRLittleEndian},
        "deflated.dcm": {"syntax": DeflatedExplicitVRLittleEndian},
        "window.dcm": {"WindowCenter": 1000, "WindowWidth": 800, "RescaleSlope": 2},
        "mono1.dcm": {"PhotometricInterpretation": "MONOCHROME1"},
        "frames.dcm": {"NumberOfFrames": 2},
    }
    out = {}
    scratch_dir = OUT / "seed-dicom"
    scratch_dir.mkdir(parents=True, exist_ok=True)
    for name, options in cases.items():
        pixels = np.concatenate([deep, deep[::-1]]) if name == "frames.dcm" else deep
        path = write_dicom(scratch_dir / name, pixels, **options)
        if name == "frames.dcm":  # two frames of 40 x 32, stored one after the other
            ds = pydicom.dcmread(path)
            ds.Rows = 40
            ds.save_as(path)
        out[name] = path.read_bytes()
    return out


def test_one_input(data: bytes) -> None:
    scratch.write_bytes(data)
    try:
        tensor = preprocess(load_image(scratch), PREP)
    except BtxrdError as exc:
        tally[f"refused: {type(exc).__name__}"] += 1
    else:
        if tensor.shape != (3, 64, 64) or tensor.dtype != np.float32:
            raise AssertionError(f"tensor of shape {tensor.shape} and type {tensor.dtype}")
        if not np.isfinite(tensor).all():
            raise AssertionError("tensor with NaN or infinity")
        tally["decoded"] += 1
    runs = sum(tally.values())
    if runs % 5000 == 0 or runs == target_runs:
        report(runs)


def report(runs: int) -> None:
    summary = {
        "executions": runs,
        "seconds": round(time.monotonic() - started, 1),
        "outcomes": dict(tally),
        "failures": 0,  # any other outcome stops the run before a report is written
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"fuzz: {json.dumps(summary)}", file=sys.stderr, flush=True)


def main() -> None:
    corpus = OUT / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (corpus / name).write_bytes(data)
    quiet_decoder_warnings()
    args = [*sys.argv]
    if not any(a.startswith("-artifact_prefix=") for a in args):
        args.append(f"-artifact_prefix={OUT}/")
    atheris.Setup([*args, str(corpus)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
