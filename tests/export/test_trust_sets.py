"""The out-of-distribution sets `make trust` builds reach the model: the runtime's decoder reads
them (none is refused as blank or unreadable), and the DICOM set is real CT and MR, once each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from btxrd.export.trust import sets
from btxrd.runtime.decode.image import load_image


@pytest.mark.parametrize("builder", [sets.documents, sets.noise, sets.flat])
def test_drawn_sets_decode(builder, tmp_path: Path) -> None:
    paths = builder(tmp_path / builder.__name__, n=6, seed=3)
    assert len(paths) == 6
    for path in paths:
        assert min(load_image(path).image.size) >= 200


def test_flat_fields_are_nearly_flat(tmp_path: Path) -> None:
    for path in sets.flat(tmp_path, n=4):
        values = np.asarray(load_image(path).image, dtype=np.float64)
        assert 1.0 <= values.std() < 6.0  # above the decoder's blank limit, far below a picture


def test_inverted_radiographs_are_the_negative(tmp_path: Path, make_phantom) -> None:
    from PIL import Image

    source = tmp_path / "r.png"
    Image.fromarray(make_phantom()).save(source)
    (path,) = sets.inverted(tmp_path / "inv", [source])
    original = np.asarray(load_image(source).image, dtype=np.int16)
    negative = np.asarray(load_image(path).image, dtype=np.int16)
    assert np.abs(original + negative - 255).mean() < 3  # JPEG-compressed negative


def test_ct_mr_slices_are_distinct_real_ct_and_mr() -> None:
    pydicom = pytest.importorskip("pydicom")
    paths = sets.ct_mr_slices()
    assert paths
    modalities = {pydicom.dcmread(p, stop_before_pixels=True).Modality for p in paths}
    assert modalities <= {"CT", "MR"} and "CT" in modalities and "MR" in modalities
    digests = {load_image(p).image.tobytes() for p in paths}
    assert len(digests) == len(paths)
    assert not any(p.name.startswith("MR_small_") for p in paths)  # re-encodings counted once


def test_photographs_are_bundled_files() -> None:
    pytest.importorskip("skimage")
    paths = sets.photographs()
    assert len(paths) >= 20 and all(p.is_file() for p in paths)
