"""DICOM through the real ``btxrd-run``: the VOI stage the file asks for
(by pydicom), classified beside a PNG of the pixels the standard's formulas give (numpy on the
DICOM values), both scoring alike; and the identifiers of each DICOM input in its JSONL record."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reliability_support import assert_scores_like_reference, records_of, run_cli

pydicom = pytest.importorskip("pydicom")

from dicom_files import (  # noqa: E402
    every_12_bit_value,
    gamma_curve,
    linear,
    linear_exact,
    lut_item,
    lut_sequence,
    sigmoid,
    write_dicom,
)

# Each maker writes the case to ``path`` and returns the 8-bit pixels it must decode to.
Maker = Callable[[Path], np.ndarray]


def _rounded(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 255)).astype(np.uint8)


def voi_lut_over_window(path: Path) -> np.ndarray:
    stored, curve = every_12_bit_value(), gamma_curve(4096, 12)
    write_dicom(
        path,
        stored,
        VOILUTSequence=lut_sequence(lut_item(curve, 12)),
        WindowCenter=1000,
        WindowWidth=200,
    )
    return _rounded(curve[stored] * 255.0 / 4095)


def two_windows(path: Path) -> np.ndarray:
    stored = every_12_bit_value()
    write_dicom(
        path,
        stored,
        WindowCenter=[1000, 3000],
        WindowWidth=[500, 800],
        WindowCenterWidthExplanation=["BONE", "SOFT TISSUE"],
    )
    return _rounded(linear(stored, 1000, 500))


def window_function(function: str) -> Maker:
    formula = {"SIGMOID": sigmoid, "LINEAR_EXACT": linear_exact}[function]

    def make(path: Path) -> np.ndarray:
        stored = every_12_bit_value()
        write_dicom(
            path,
            stored,
            RescaleSlope=2,
            RescaleIntercept=-1000,
            WindowCenter=1500,
            WindowWidth=3000,
            VOILUTFunction=function,
        )
        return _rounded(formula(stored * 2.0 - 1000, 1500, 3000))

    return make


def monochrome1_window(path: Path) -> np.ndarray:
    stored = every_12_bit_value()
    write_dicom(
        path, stored, PhotometricInterpretation="MONOCHROME1", WindowCenter=1500, WindowWidth=1200
    )
    return 255 - _rounded(linear(stored, 1500, 1200))


SAME = [
    # (id, file name, maker, note expected in the record)
    ("dicom-voi-lut-over-window", "lut.dcm", voi_lut_over_window, "window was not used"),
    ("dicom-two-windows", "two.dcm", two_windows, "(window 1 of 2: 'BONE')"),
    ("dicom-sigmoid-after-rescale", "s.dcm", window_function("SIGMOID"), ", SIGMOID"),
    ("dicom-linear-exact-after-rescale", "e.dcm", window_function("LINEAR_EXACT"), "LINEAR_EXACT"),
    ("dicom-monochrome1-window", "m1.dcm", monochrome1_window, "MONOCHROME1 inverted"),
]


@pytest.mark.parametrize(("name", "make", "note"), [c[1:] for c in SAME], ids=[c[0] for c in SAME])
def test_dicom_voi_scores_as_the_standard_says(tiny_onnx, tmp_path, name, make, note):
    case = tmp_path / name
    assert_scores_like_reference(tiny_onnx, case, make(case), tmp_path, note)


@pytest.mark.filterwarnings("ignore:The value length", "ignore:Invalid value for VR")
def test_dicom_records_carry_the_identifiers_of_the_image(tiny_onnx, tmp_path):
    """UIDs, body part and laterality in the record's identifiers (JSONL and Parquet), as text
    from the file (stripped, capped); a field the file lacks is null; a PNG's record has
    "identifiers": null. The deprecated "dicom" key still holds the same fields."""
    knee = write_dicom(
        tmp_path / "knee.dcm",
        every_12_bit_value(),
        StudyInstanceUID="1.2.826.0.1.3680043.8.498.1",
        SeriesInstanceUID="1.2.826.0.1.3680043.8.498.2",
        BodyPartExamined=" KNEE ",
        ImageLaterality="L",
        Laterality="R",
    )
    bare = write_dicom(tmp_path / "bare.dcm", every_12_bit_value(), BodyPartExamined="X" * 300)
    png = tmp_path / "plain.png"
    Image.fromarray((every_12_bit_value() // 16).astype(np.uint8)).save(png)
    out = tmp_path / "results.jsonl"
    result = run_cli("--model", tiny_onnx, "--jsonl", "--output", out, knee, bare, png)
    assert result.exit_code == 0, result.stderr
    first, second, third = records_of(out)

    assert first["dicom"] == {
        "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
        "series_instance_uid": "1.2.826.0.1.3680043.8.498.2",
        "sop_instance_uid": str(pydicom.dcmread(knee).SOPInstanceUID),
        "body_part_examined": "KNEE",
        "laterality": "L",
    }
    assert second["dicom"] == {
        "study_instance_uid": None,
        "series_instance_uid": None,
        "sop_instance_uid": str(pydicom.dcmread(bare).SOPInstanceUID),
        "body_part_examined": "X" * 128,
        "laterality": None,
    }
    assert third["dicom"] is None
    assert first["identifiers"] == {"format": "DICOM", "fields": first["dicom"]}
    assert second["identifiers"] == {"format": "DICOM", "fields": second["dicom"]}
    assert third["identifiers"] is None

    pq = pytest.importorskip("pyarrow.parquet")
    parquet = tmp_path / "results.parquet"
    result = run_cli("--model", tiny_onnx, "--parquet", "--output", parquet, knee, bare, png)
    assert result.exit_code == 0, result.stderr
    rows = sorted(pq.read_table(parquet).to_pylist(), key=lambda row: row["display_name"])
    by_name = {row["display_name"]: row for row in rows}
    knee_row, png_row = by_name["knee.dcm"], by_name["plain.png"]
    assert knee_row["identifiers"]["format"] == "DICOM"
    assert dict(knee_row["identifiers"]["fields"]) == first["dicom"]
    assert knee_row["dicom"] == first["dicom"]
    assert png_row["identifiers"] is None and png_row["dicom"] is None
