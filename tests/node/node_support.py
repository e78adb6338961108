"""Real DICOM software for the node's tests: Orthanc as the PACS (its REST API on loopback), the
node itself as ``btxrd-serve dicom`` in its own process, and radiographs as DX datasets.

Every wait here is for a process to be ready or for an object to arrive, bounded by a deadline;
none decides a result.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "models" / "samples"


def pydicom_file(name: str) -> Path:
    """One of the test files pydicom ships (by path: asking pydicom for a file it does not ship
    starts a download)."""
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    assert path.is_file(), path
    return path


PACS_AE = "PACS"
NODE_AE = "BTXRD"
READY_SECONDS = 60  # a process's start (the node loads the model) on a busy 2-core machine
ARRIVAL_SECONDS = 60  # results reaching the PACS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def needs(tool: str) -> str:
    """The tool's path, or skip with the reason (``make dicom-tools`` installs it)."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make dicom-tools; apt-get install it)")
    return path


def dx_from_picture(picture: Path, out: Path, **attributes: object) -> Path:
    """A DX For Presentation dataset whose pixels are ``picture`` as 8-bit grayscale, in its
    own study, with the patient, study, series and equipment modules a PACS stores."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        DigitalXRayImageStorageForPresentation,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    pixels = np.asarray(Image.open(picture).convert("L"))
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Phantom^Synthetic"
    ds.PatientID = "SYN-" + picture.stem
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate, ds.StudyTime = "20261207", "120000"
    ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "A" + picture.stem[-4:], "1", ""
    ds.Modality = "DX"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.Manufacturer = "btxrd tests"
    ds.PatientOrientation = ["A", "F"]
    ds.BodyPartExamined = "KNEE"
    ds.ImageLaterality = "L"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(out, enforce_file_format=True)
    return out


@dataclass
class Orthanc:
    """An Orthanc started for one test: its REST API and its DICOM port."""

    http: str
    dicom_port: int

    def rest(self, method: str, path: str, body: object = None) -> object:
        data = None
        if isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.http + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read()
        try:
            return json.loads(text)
        except ValueError:
            return text

    def upload(self, path: Path) -> dict:
        return self.rest("POST", "/instances", path.read_bytes())

    def add_modality(self, name: str, ae_title: str, port: int) -> None:
        self.rest(
            "PUT", f"/modalities/{name}", {"AET": ae_title, "Host": "127.0.0.1", "Port": port}
        )

    def study_instances(self, study_uid: str) -> list[dict]:
        """Every instance Orthanc holds in the study with ``study_uid``, with its tags."""
        found = self.rest("POST", "/tools/lookup", study_uid.encode())
        studies = [item["ID"] for item in found if item["Type"] == "Study"]
        if not studies:
            return []
        return self.rest("GET", f"/studies/{studies[0]}/instances?expand")

    def file(self, instance_id: str) -> bytes:
        return self.rest("GET", f"/instances/{instance_id}/file")


@contextmanager
def orthanc(
    folder: Path, http_port: int | None = None, dicom_port: int | None = None
) -> Iterator[Orthanc]:
    """Orthanc on loopback (on the given ports, else free ones), configured by its JSON file,
    its storage in ``folder``."""
    binary = needs("Orthanc")
    http_port, dicom_port = http_port or free_port(), dicom_port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "btxrd-test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": PACS_AE,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomModalities": {},
        "Plugins": [],
        "HttpServerEnabled": True,
        "StableAge": 1,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen(
        [binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT
    )
    pacs = Orthanc(f"http://127.0.0.1:{http_port}", dicom_port)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                pacs.rest("GET", "/system")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "Orthanc did not start: " + (folder / "orthanc.log").read_text()[-2000:]
                    ) from None
                time.sleep(0.1)
        yield pacs
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@dataclass
class Node:
    """``btxrd-serve dicom`` running in its own process."""

    process: subprocess.Popen
    port: int
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@contextmanager
def node(outbox: Path, destination: str, *flags: str) -> Iterator[Node]:
    """The node on a free port of loopback, its results to ``destination``; stopped after."""
    command = str(Path(sys.executable).parent / "btxrd-serve")
    stderr = outbox.parent / f"{outbox.name}-node-{time.monotonic_ns()}.log"
    outbox.parent.mkdir(parents=True, exist_ok=True)
    with stderr.open("w") as sink:
        process = subprocess.Popen(
            [
                command,
                "dicom",
                "--port",
                "0",
                "--destination",
                destination,
                "--outbox",
                str(outbox),
                *flags,
            ],
            stderr=sink,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "BTXRD_MODEL": "", "BTXRD_CONFIG": ""},
        )
    running = Node(process, 0, stderr)
    try:
        running.port = _listening_port(running)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)


def _listening_port(running: Node) -> int:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        for line in running.log().splitlines():
            if " listening on " in line:
                return int(line.split(" listening on ")[1].split(";")[0].rsplit(":", 1)[1])
        if running.process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError("the node did not start: " + running.log()[-2000:])


def wait_for(condition, what: str, seconds: float = ARRIVAL_SECONDS):
    """``condition()``'s first truthy value, checked until the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds:g} s")
        time.sleep(0.2)


def sr_findings(sr) -> dict:
    """The class and the probabilities a btxrd SR carries (its Findings section)."""
    found: dict = {"class": None, "scores": {}, "comments": []}

    def walk(items):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            if item.ValueType == "CODE" and name == "Finding":
                found["class"] = item.ConceptCodeSequence[0].CodeMeaning
            elif item.ValueType == "NUM" and name.startswith("Probability of "):
                value = item.MeasuredValueSequence[0].NumericValue
                found["scores"][name.removeprefix("Probability of ")] = float(value)
            elif item.ValueType == "TEXT" and name == "Comment":
                found["comments"].append(item.TextValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """dicom3tools' verdict on an object: its lines that report an error."""
    done = subprocess.run([needs("dciodvfy"), str(path)], capture_output=True, text=True)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]
