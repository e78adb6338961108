"""Helpers of the reliability matrix (issue "Reliability and security"): every case runs
through the real ``btxrd-run`` command, beside good images that must still be classified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

from btxrd.runtime.cli import main

# Keep the caller's environment out of the commands under test.
CLEAN_ENV = {"BTXRD_MODEL": None, "BTXRD_CONFIG": None}


def run_cli(*args: object, env: dict | None = None) -> Result:
    """``btxrd-run`` in this process through click, with stdout and stderr kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args], env={**CLEAN_ENV, **(env or {})})


def run_process(
    *args: object, code: str | None = None, wrap: list[str] = (), **kwargs
) -> subprocess.CompletedProcess:
    """``btxrd-run`` as its own process (signals, pipes, resource limits, namespaces), or
    ``code`` run with the same arguments; ``wrap`` is a command to run it under."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    start = ["-c", code] if code else ["-m", "btxrd.runtime.cli"]
    command = [*wrap, sys.executable, *start, *map(str, args)]
    return subprocess.run(command, capture_output=True, env=env, timeout=120, **kwargs)


def assert_one_clear_line(stderr: str, *needles: str) -> str:
    """Exactly one stderr line is an error; it contains every needle; no traceback anywhere."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def records_of(jsonl: Path) -> list[dict]:
    """Every line of a JSONL output must be a complete record."""
    return [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]


def write_dicom(path: Path, *, compressed: bool = False, report: bool = False) -> None:
    """A small DICOM file written by pydicom: a 12-bit image, the same image under a compressed
    transfer syntax (JPEG 2000, whose decoder is not installed), or a structured report."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        JPEG2000Lossless,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    sop_class = "1.2.840.10008.5.1.4.1.1.88.33" if report else SecondaryCaptureImageStorage
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = JPEG2000Lossless if compressed else ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if not report:
        pixels = (np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % 4096).tobytes()
        ds.Rows, ds.Columns, ds.SamplesPerPixel = 64, 48, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        # Not a real JPEG 2000 stream: with no decoder installed it is never looked at.
        ds.PixelData = encapsulate([pixels]) if compressed else pixels
    ds.save_as(path, enforce_file_format=True)
