"""The DICOM grayscale pipeline (modality LUT or rescale, then VOI LUT or window, onto 0..255)
against the standard's formulas, computed here with numpy (PS3.3 C.11.1, C.11.2), on files pydicom
writes during the test and on pydicom's bundled files. Also the identifiers a DICOM record carries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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

from btxrd.runtime.decode.dicom import DICOM_FIELDS  # noqa: E402
from btxrd.runtime.decode.image import load_image  # noqa: E402
from btxrd.runtime.errors import InputError  # noqa: E402

BUNDLED = Path(pydicom.__file__).parent / "data" / "test_files"


def assert_rounded(got: np.ndarray, want: np.ndarray) -> None:
    """``got`` is ``want`` rounded to the nearest grey level."""
    assert got.dtype == np.uint8 and got.shape == want.shape
    assert np.abs(got.astype(np.float64) - want).max() <= 0.5 + 1e-9


def decoded(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    image = load_image(path)
    return np.asarray(image.image), image.notes


# --- windows --------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # sigmoid's far tails: 0
@pytest.mark.parametrize(
    ("function", "centre", "width", "formula"),
    [
        (None, 2048, 1000, linear),
        ("LINEAR", 1000.5, 1, linear),  # width 1: a threshold
        ("LINEAR_EXACT", 2000, 1000, linear_exact),
        ("LINEAR_EXACT", 2000.25, 0.5, linear_exact),  # below 1: allowed for LINEAR_EXACT
        ("SIGMOID", 2048, 1000, sigmoid),
        ("SIGMOID", 700, 0.5, sigmoid),  # below 1: allowed for SIGMOID
    ],
    ids=[
        "linear",
        "linear-width-1",
        "linear-exact",
        "linear-exact-width-0.5",
        "sigmoid",
        "sigmoid-0.5",
    ],
)
def test_window_matches_the_standard(tmp_path: Path, function, centre, width, formula) -> None:
    stored = every_12_bit_value()
    attrs = {"WindowCenter": centre, "WindowWidth": width}
    if function:
        attrs["VOILUTFunction"] = function
    got, notes = decoded(write_dicom(tmp_path / "w.dcm", stored, **attrs))
    assert_rounded(got, formula(stored, centre, width))
    assert any(n.startswith(f"DICOM window centre {centre:g} width {width:g}") for n in notes)
    if function not in (None, "LINEAR"):
        assert any(f", {function}" in n for n in notes), notes


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_applies_to_rescaled_values(tmp_path: Path, function) -> None:
    """Stored 0..4095 rescaled by 2x - 1000: the window is in the rescaled units."""
    stored = every_12_bit_value()
    path = write_dicom(
        tmp_path / "r.dcm",
        stored,
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=1500,
        WindowWidth=3000,
        VOILUTFunction=function,
    )
    formula = {"LINEAR": linear, "LINEAR_EXACT": linear_exact, "SIGMOID": sigmoid}[function]
    assert_rounded(decoded(path)[0], formula(stored * 2.0 - 1000, 1500, 3000))


def test_of_several_windows_the_first_is_used_and_named(tmp_path: Path) -> None:
    stored = every_12_bit_value()
    path = write_dicom(
        tmp_path / "two.dcm",
        stored,
        WindowCenter=[1000, 3000],
        WindowWidth=[500, 800],
        WindowCenterWidthExplanation=["BONE", "SOFT TISSUE"],
    )
    got, notes = decoded(path)
    assert_rounded(got, linear(stored, 1000, 500))
    assert "DICOM window centre 1000 width 500 (window 1 of 2: 'BONE')" in notes


def test_bundled_file_with_two_windows_uses_the_first() -> None:
    """examples_overlay.dcm (pydicom's data): windows 450/790 ('WINDOW1') and 200/443."""
    path = BUNDLED / "examples_overlay.dcm"
    ds = pydicom.dcmread(path)
    assert "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds
    got, notes = decoded(path)
    assert_rounded(got, linear(ds.pixel_array, 450, 790))
    assert "DICOM window centre 450 width 790 (window 1 of 2: 'WINDOW1')" in notes


@pytest.mark.parametrize(
    "name", ["MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"]
)
def test_bundled_signed_mr_is_windowed_as_the_standard_says(name: str) -> None:
    """MR_small (pydicom's data): signed 16-bit, window 600/1600, in three encodings."""
    ds = pydicom.dcmread(BUNDLED / name)
    got, notes = decoded(BUNDLED / name)
    assert_rounded(got, linear(ds.pixel_array, 600, 1600))
    assert "DICOM window centre 600 width 1600" in notes


def test_bundled_ct_without_a_window_uses_the_real_range_of_the_rescaled_values() -> None:
    ds = pydicom.dcmread(BUNDLED / "CT_small.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    want = (hu - hu.min()) * 255.0 / (hu.max() - hu.min())
    got, notes = decoded(BUNDLED / "CT_small.dcm")
    assert_rounded(got, want)
    assert not any("window" in n or "VOI" in n for n in notes)


def test_unknown_voi_lut_function_is_applied_as_linear_with_a_note(tmp_path: Path) -> None:
    stored = every_12_bit_value()
    path = write_dicom(
        tmp_path / "u.dcm", stored, WindowCenter=2048, WindowWidth=1000, VOILUTFunction="CUBIC"
    )
    got, notes = decoded(path)
    assert_rounded(got, linear(stored, 2048, 1000))
    assert "DICOM VOI LUT Function 'CUBIC' unknown; applied LINEAR" in notes


def test_sigmoid_window_of_width_0_is_ignored_with_a_note(tmp_path: Path) -> None:
    stored = every_12_bit_value()
    plain, _ = decoded(write_dicom(tmp_path / "p.dcm", stored))
    path = write_dicom(
        tmp_path / "s.dcm", stored, WindowCenter=2048, WindowWidth=0, VOILUTFunction="SIGMOID"
    )
    got, notes = decoded(path)
    np.testing.assert_array_equal(got, plain)
    assert "DICOM SIGMOID window ignored (width 0 <= 0); used the real range" in notes


# --- VOI LUT Sequence -------------------------------------------------------------------------


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_voi_lut_is_applied_and_preferred_over_the_window(tmp_path: Path, vr: str) -> None:
    stored = every_12_bit_value()
    curve = gamma_curve(4096, 12)
    path = write_dicom(
        tmp_path / "lut.dcm",
        stored,
        VOILUTSequence=lut_sequence(lut_item(curve, 12, vr=vr, explanation="NORMAL")),
        WindowCenter=1000,
        WindowWidth=200,
    )
    got, notes = decoded(path)
    assert_rounded(got, curve[stored] * 255.0 / 4095)
    assert (
        "DICOM VOI LUT applied ('NORMAL'); the file's window was not used (the LUT is preferred)"
        in notes
    )


@pytest.mark.parametrize("vr", ["US", "OW"])
@pytest.mark.parametrize("bits", [8, 10, 12, 16])
def test_voi_lut_output_range_is_0_to_2_to_the_bits_minus_1(tmp_path: Path, bits, vr) -> None:
    """C.11.2.1.1: the entries range over 0..2^n - 1, n the descriptor's third value. A LUT that
    uses only the lower quarter of that range gives a dark image, not one stretched to white.
    The 8-bit LUT has 4096 entries: pydicom 3.0.2 alone wraps its indices past 255."""
    stored = every_12_bit_value()
    curve = gamma_curve(4096, bits) // 4
    path = write_dicom(
        tmp_path / "lut.dcm", stored, VOILUTSequence=lut_sequence(lut_item(curve, bits, vr=vr))
    )
    got, _ = decoded(path)
    assert_rounded(got, curve[stored] * 255.0 / (2**bits - 1))
    assert got.max() == round((2**bits - 1) // 4 * 255 / (2**bits - 1))


def test_voi_lut_maps_values_outside_it_to_its_first_and_last_entries(tmp_path: Path) -> None:
    """First value mapped 1000, 1024 entries: stored values below 1000 take entry 0, above 2023
    the last one (C.11.2.1.1)."""
    stored = every_12_bit_value()
    curve = np.linspace(100, 4000, 1024).round().astype(np.uint16)
    path = write_dicom(
        tmp_path / "lut.dcm", stored, VOILUTSequence=lut_sequence(lut_item(curve, 12, first=1000))
    )
    index = np.clip(stored.astype(int) - 1000, 0, 1023)
    assert_rounded(decoded(path)[0], curve[index] * 255.0 / 4095)


def test_voi_lut_input_past_2_to_the_16_is_its_last_entry_not_wrapped(tmp_path: Path) -> None:
    """Rescaled by 17, stored 3856..4095 give 65552..69615: past 2^16 above the first value
    mapped. pydicom 3.0.2 alone wraps them onto the LUT's first entries (dark); the standard
    maps them to the last entry."""
    stored = every_12_bit_value()
    curve = np.arange(4096, dtype=np.uint16)
    path = write_dicom(
        tmp_path / "lut.dcm",
        stored,
        RescaleSlope=17,
        RescaleIntercept=0,
        VOILUTSequence=lut_sequence(lut_item(curve, 12)),
    )
    got, _ = decoded(path)
    assert_rounded(got, curve[np.clip(stored.astype(int) * 17, 0, 4095)] * 255.0 / 4095)
    assert (got[stored >= 3856] == 255).all()


def test_of_several_voi_luts_the_first_is_used_and_named(tmp_path: Path) -> None:
    stored = every_12_bit_value()
    first, second = gamma_curve(4096, 12), gamma_curve(4096, 12)[::-1].copy()
    luts = lut_sequence(lut_item(first, 12, explanation="A"), lut_item(second, 12, explanation="B"))
    got, notes = decoded(write_dicom(tmp_path / "l.dcm", stored, VOILUTSequence=luts))
    assert_rounded(got, first[stored] * 255.0 / 4095)
    assert "DICOM VOI LUT applied (LUT 1 of 2: 'A')" in notes


def test_voi_lut_item_without_data_is_ignored_and_the_window_used(tmp_path: Path) -> None:
    stored = every_12_bit_value()
    item = lut_item(gamma_curve(4096, 12), 12)
    del item.LUTData
    path = write_dicom(
        tmp_path / "l.dcm",
        stored,
        VOILUTSequence=lut_sequence(item),
        WindowCenter=2048,
        WindowWidth=1000,
    )
    got, notes = decoded(path)
    assert_rounded(got, linear(stored, 2048, 1000))
    assert "DICOM VOI LUT Sequence without LUT Descriptor or LUT Data ignored" in notes


@pytest.mark.parametrize(
    ("entries", "held", "bits", "message"),
    [
        (4096, 100, 12, "LUT Descriptor says 4096 entries, LUT Data holds 100"),
        (4096, 4096, 9, "entries of 9 bits; pydicom reads 8 or 10-16"),
    ],
    ids=["data-short", "9-bit-entries"],
)
def test_malformed_voi_lut_is_refused_by_name(tmp_path: Path, entries, held, bits, message) -> None:
    item = lut_item(np.arange(held) % 256, bits)
    item.LUTDescriptor = [entries, 0, bits]
    path = write_dicom(tmp_path / "l.dcm", every_12_bit_value(), VOILUTSequence=lut_sequence(item))
    with pytest.raises(InputError, match=rf"malformed DICOM VOI LUT \({message}\)"):
        load_image(path)


# --- modality LUT -----------------------------------------------------------------------------


def test_modality_lut_then_window(tmp_path: Path) -> None:
    """The window applies to the Modality LUT's output (C.11.1, C.11.2)."""
    stored = every_12_bit_value()
    mlut = (np.arange(4096) * 3 // 2).astype(np.uint16)  # 0..6142
    path = write_dicom(
        tmp_path / "m.dcm",
        stored,
        ModalityLUTSequence=lut_sequence(lut_item(mlut, 16)),
        WindowCenter=3000,
        WindowWidth=2000,
    )
    got, notes = decoded(path)
    assert_rounded(got, linear(mlut[stored], 3000, 2000))
    assert "DICOM modality LUT applied" in notes


def test_modality_lut_without_voi_uses_the_real_range_of_its_output(tmp_path: Path) -> None:
    stored = every_12_bit_value()
    mlut = (1000 + (np.arange(4096) % 512) * 2).astype(np.uint16)  # 1000..2022, not monotonic
    path = write_dicom(
        tmp_path / "m.dcm", stored, ModalityLUTSequence=lut_sequence(lut_item(mlut, 16))
    )
    values = mlut[stored].astype(np.float64)
    want = (values - values.min()) * 255.0 / (values.max() - values.min())
    assert_rounded(decoded(path)[0], want)


def test_modality_lut_of_12_bit_entries_is_refused(tmp_path: Path) -> None:
    """pydicom reads only 8- and 16-bit Modality LUTs (C.11.1.1.1 allows those two)."""
    mlut = np.arange(4096, dtype=np.uint16)
    path = write_dicom(
        tmp_path / "m.dcm",
        every_12_bit_value(),
        ModalityLUTSequence=lut_sequence(lut_item(mlut, 12)),
    )
    with pytest.raises(InputError, match="malformed DICOM modality LUT"):
        load_image(path)


# --- MONOCHROME1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("voi", ["window", "sigmoid", "lut", "none"])
def test_monochrome1_is_the_inverse_of_monochrome2_after_the_voi(tmp_path: Path, voi) -> None:
    stored = every_12_bit_value()
    attrs = {
        "window": {"WindowCenter": 1500, "WindowWidth": 1200},
        "sigmoid": {"WindowCenter": 1500, "WindowWidth": 1200, "VOILUTFunction": "SIGMOID"},
        "lut": {"VOILUTSequence": lut_sequence(lut_item(gamma_curve(4096, 12), 12))},
        "none": {},
    }[voi]
    mono2, _ = decoded(write_dicom(tmp_path / "m2.dcm", stored, **attrs))
    mono1, notes = decoded(
        write_dicom(tmp_path / "m1.dcm", stored, PhotometricInterpretation="MONOCHROME1", **attrs)
    )
    np.testing.assert_array_equal(mono1, 255 - mono2)
    assert "MONOCHROME1 inverted" in notes


# --- what identifies the image ----------------------------------------------------------------


def source_info(path: Path) -> dict[str, str]:
    """The identifier fields the file has (every field of the format is in ``identifiers``)."""
    identifiers = load_image(path).identifiers
    return {} if identifiers is None else identifiers.present()


def test_identifiers_name_their_format_and_every_field(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "id.dcm", every_12_bit_value(), BodyPartExamined="KNEE")
    identifiers = load_image(path).identifiers
    assert identifiers.format == "DICOM"
    assert set(identifiers.fields) == set(DICOM_FIELDS)
    assert identifiers.fields["body_part_examined"] == "KNEE"
    assert identifiers.fields["study_instance_uid"] is None


def test_identifiers_are_read_as_present(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "id.dcm",
        every_12_bit_value(),
        StudyInstanceUID="1.2.3.4",
        SeriesInstanceUID="1.2.3.4.5",
        BodyPartExamined="KNEE",
        ImageLaterality="L",
        Laterality="R",
    )
    sop = str(pydicom.dcmread(path).SOPInstanceUID)
    assert source_info(path) == {
        "study_instance_uid": "1.2.3.4",
        "series_instance_uid": "1.2.3.4.5",
        "sop_instance_uid": sop,
        "body_part_examined": "KNEE",
        "laterality": "L",  # Image Laterality before the series' Laterality
    }


def test_laterality_of_the_series_stands_in_and_absent_ones_are_left_out(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "id.dcm", every_12_bit_value(), Laterality="R")
    info = source_info(path)
    assert info["laterality"] == "R"
    assert set(info) == {"sop_instance_uid", "laterality"}


@pytest.mark.filterwarnings("ignore:The value length", "ignore:Invalid value for VR")
def test_identifier_text_is_stripped_capped_and_kept_as_text(tmp_path: Path) -> None:
    path = write_dicom(
        tmp_path / "id.dcm",
        every_12_bit_value(),
        BodyPartExamined="  HAND\x1b[31m ",
        StudyInstanceUID="9" * 300,
        SeriesInstanceUID="   ",
    )
    info = source_info(path)
    assert info["body_part_examined"] == "HAND\x1b[31m"
    assert info["study_instance_uid"] == "9" * 128
    assert "series_instance_uid" not in info


@pytest.mark.filterwarnings("ignore:The value length")
def test_an_absurdly_long_identifier_is_left_out_with_a_note(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "id.dcm", every_12_bit_value(), BodyPartExamined="X" * 5000)
    decoded_image = load_image(path)
    assert decoded_image.identifiers.fields["body_part_examined"] is None
    assert "DICOM BodyPartExamined of 5,000 bytes left out of the record" in decoded_image.notes


def test_identifiers_of_a_deflated_file(tmp_path: Path) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    path = write_dicom(
        tmp_path / "d.dcm",
        every_12_bit_value(),
        syntax=DeflatedExplicitVRLittleEndian,
        StudyInstanceUID="1.2.3",
        BodyPartExamined="FOOT",
    )
    info = source_info(path)
    assert info["study_instance_uid"] == "1.2.3" and info["body_part_examined"] == "FOOT"


def test_other_images_have_no_identifiers(tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "a.png"
    Image.fromarray((every_12_bit_value() // 16).astype(np.uint8)).save(png)
    assert load_image(png).identifiers is None


def test_bundled_ct_identifiers() -> None:
    ds = pydicom.dcmread(BUNDLED / "CT_small.dcm")
    info = source_info(BUNDLED / "CT_small.dcm")
    assert info["study_instance_uid"] == ds.StudyInstanceUID
    assert info["sop_instance_uid"] == ds.SOPInstanceUID
    assert "laterality" not in info  # present but empty in the file


# --- memory -----------------------------------------------------------------------------------

MEMORY_CASES = {
    "window": {"WindowCenter": 2048, "WindowWidth": 1000},
    "sigmoid-after-rescale": {
        "WindowCenter": 2048,
        "WindowWidth": 1000,
        "VOILUTFunction": "SIGMOID",
        "RescaleSlope": 2,
        "RescaleIntercept": -1000,
    },
    "voi-lut": {"VOILUTSequence": lut_sequence(lut_item(gamma_curve(4096, 12), 12))},
    "modality-lut": {"ModalityLUTSequence": lut_sequence(lut_item(np.arange(4096) * 3 // 2, 16))},
}


@pytest.mark.parametrize("attrs", list(MEMORY_CASES.values()), ids=list(MEMORY_CASES))
def test_voi_stages_allocate_no_float64_copy_of_the_frame(tmp_path: Path, attrs) -> None:
    """numpy's allocations are traced: pydicom's stages run on bands of rows. The file's bytes,
    the frame and the 8-bit output take about 6 bytes a pixel; pydicom on the whole frame would
    add 8 (its float64 copy) and more (masks): 12 bytes a pixel measured for apply_windowing."""
    import tracemalloc

    stored = (np.arange(2000 * 2000) % 4096).reshape(2000, 2000).astype(np.uint16)
    path = write_dicom(tmp_path / "big.dcm", stored, **attrs)
    tracemalloc.start()
    try:
        load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * stored.size, f"{peak / stored.size:.1f} bytes a pixel"
