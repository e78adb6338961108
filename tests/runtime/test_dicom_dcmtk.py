"""The DICOM grayscale pipeline against an independent one: dcmtk's ``dcmj2pnm`` (Debian's
dcmtk package), which applies the modality LUT or rescale, the n-th window or VOI LUT of the file
and MONOCHROME1 itself. Every pixel is within one grey level of dcmtk's (dcmtk truncates where
btxrd rounds to the nearest). Skipped where dcmtk is not installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
if shutil.which("dcmj2pnm") is None:
    pytest.skip(
        "dcmtk's dcmj2pnm is not installed (apt-get install dcmtk)", allow_module_level=True
    )

from dicom_files import (  # noqa: E402
    every_12_bit_value,
    gamma_curve,
    lut_item,
    lut_sequence,
    write_dicom,
)

from btxrd.runtime.decode.image import load_image  # noqa: E402

BUNDLED = Path(pydicom.__file__).parent / "data" / "test_files"
WINDOW, LUT = ["+Wi", "1"], ["+Wl", "1"]


def _written(**attrs):
    def make(path: Path) -> Path:
        return write_dicom(path, every_12_bit_value(), **attrs)

    return make


def _bundled(name: str):
    return lambda path: BUNDLED / name


CASES = {
    "window": (_written(WindowCenter=2048, WindowWidth=1000), WINDOW),
    "window-after-rescale": (
        _written(WindowCenter=1500, WindowWidth=3000, RescaleSlope=2, RescaleIntercept=-1000),
        WINDOW,
    ),
    "sigmoid": (_written(WindowCenter=2048, WindowWidth=1000, VOILUTFunction="SIGMOID"), WINDOW),
    "two-windows": (_written(WindowCenter=[1000, 3000], WindowWidth=[500, 800]), WINDOW),
    "monochrome1-window": (
        _written(WindowCenter=1500, WindowWidth=1200, PhotometricInterpretation="MONOCHROME1"),
        WINDOW,
    ),
    "voi-lut-12-bit": (
        _written(VOILUTSequence=lut_sequence(lut_item(gamma_curve(4096, 12), 12))),
        LUT,
    ),
    "voi-lut-12-bit-lower-quarter": (
        _written(VOILUTSequence=lut_sequence(lut_item(gamma_curve(4096, 12) // 4, 12))),
        LUT,
    ),
    "voi-lut-16-bit-ow": (
        _written(VOILUTSequence=lut_sequence(lut_item(gamma_curve(4096, 16), 16, vr="OW"))),
        LUT,
    ),
    "voi-lut-first-value-1000": (
        _written(
            VOILUTSequence=lut_sequence(
                lut_item(np.linspace(100, 4000, 1024).round().astype(np.uint16), 12, first=1000)
            )
        ),
        LUT,
    ),
    "modality-lut-then-window": (
        _written(
            ModalityLUTSequence=lut_sequence(lut_item((np.arange(4096) * 3 // 2), 16)),
            WindowCenter=3000,
            WindowWidth=2000,
        ),
        WINDOW,
    ),
    "bundled-mr-small": (_bundled("MR_small.dcm"), WINDOW),
    "bundled-mr-small-big-endian": (_bundled("MR_small_bigendian.dcm"), WINDOW),
    "bundled-examples-overlay": (_bundled("examples_overlay.dcm"), WINDOW),
}


@pytest.mark.parametrize(("make", "options"), list(CASES.values()), ids=list(CASES))
def test_dicom_decodes_as_dcmtk_renders_it(tmp_path: Path, make, options) -> None:
    path = make(tmp_path / "case.dcm")
    rendered = tmp_path / "dcmtk.pgm"
    subprocess.run(
        ["dcmj2pnm", *options, "--no-overlays", str(path), str(rendered)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    theirs = np.asarray(Image.open(rendered)).astype(int)
    ours = np.asarray(load_image(path).image).astype(int)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1
