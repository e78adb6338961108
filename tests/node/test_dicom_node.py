"""The DICOM node against real DICOM software: Orthanc as the PACS, dcmtk's storescu and echoscu,
dicom3tools' dciodvfy, and pynetdicom as a hostile sender; the node runs as ``btxrd-serve dicom``
in its own process, with the shipped demo model.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from node_support import (
    NODE_AE,
    PACS_AE,
    SAMPLES,
    dciodvfy_errors,
    dx_from_picture,
    free_port,
    needs,
    node,
    orthanc,
    pydicom_file,
    sr_findings,
    wait_for,
)
from PIL import Image
from schema_check import assert_valid

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")

from pydicom.uid import (  # noqa: E402
    ComprehensiveSRStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

pytestmark = pytest.mark.slow
KNEE = SAMPLES / "IMG000001.jpeg"


def run_json(path: Path) -> dict:
    """``btxrd-run --json``'s record of ``path`` with the shipped model."""
    command = [str(Path(sys.executable).parent / "btxrd-run"), "--json", "-q", str(path)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)["results"][0]


def inverted_dx(tmp_path: Path) -> Path:
    """A film stored with its grey scale inverted (a MONOCHROME1 mix-up): unlike anything the
    demo model was trained on, so its gate refuses it."""
    inverted = tmp_path / "inverted.png"
    Image.fromarray(255 - np.asarray(Image.open(KNEE).convert("L"))).save(inverted)
    return dx_from_picture(inverted, tmp_path / "inverted.dcm")


def results_of(outbox: Path) -> list[dict]:
    path = outbox / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def store(
    path: Path, port: int, *flags: str, calling: str = PACS_AE
) -> subprocess.CompletedProcess:
    """dcmtk's storescu sending ``path`` to the node."""
    command = [needs("storescu"), "-aet", calling, "-aec", NODE_AE, *flags, "127.0.0.1", str(port)]
    return subprocess.run([*command, str(path)], capture_output=True, text=True)


def echo(port: int, calling: str) -> subprocess.CompletedProcess:
    command = [needs("echoscu"), "-aet", calling, "-aec", NODE_AE, "127.0.0.1", str(port)]
    return subprocess.run(command, capture_output=True, text=True)


def study_objects(pacs, study_uid: str, count: int) -> dict[str, pydicom.Dataset]:
    """The study's instances in Orthanc once it holds ``count``, by SOP class."""
    instances = wait_for(
        lambda: (found := pacs.study_instances(study_uid)) and len(found) >= count and found,
        f"{count} instances in study {study_uid}",
    )
    datasets = [pydicom.dcmread(_bytes(pacs.file(i["ID"]))) for i in instances]
    return {str(ds.SOPClassUID): ds for ds in datasets}


def _bytes(data: bytes):
    import io

    return io.BytesIO(data)


def test_a_routed_study_comes_back_with_a_report_and_an_overlay(tmp_path):
    """Orthanc stores a study and routes it to the node; the same study in Orthanc then holds
    the SR and the overlay SC, whose class and probabilities are btxrd-run's, and which
    dciodvfy passes."""
    needs("dciodvfy")
    dx = dx_from_picture(KNEE, tmp_path / "knee.dcm")
    source = pydicom.dcmread(dx)
    expected = run_json(dx)
    assert expected["prediction"] is not None
    with (
        orthanc(tmp_path / "orthanc") as pacs,
        node(tmp_path / "outbox", f"{PACS_AE}@127.0.0.1:{pacs.dicom_port}") as running,
    ):
        pacs.add_modality("btxrd", NODE_AE, running.port)
        uploaded = pacs.upload(dx)
        pacs.rest("POST", "/modalities/btxrd/store", {"Resources": [uploaded["ID"]]})
        objects = study_objects(pacs, source.StudyInstanceUID, 3)
        wait_for(lambda: not list((tmp_path / "outbox" / "pending").iterdir()), "outbox empty")

    report = objects[ComprehensiveSRStorage]
    overlay = objects[SecondaryCaptureImageStorage]
    findings = sr_findings(report)
    assert findings["class"] == expected["prediction"]
    assert findings["scores"].keys() == expected["scores"].keys()
    for name, probability in expected["scores"].items():
        assert findings["scores"][name] == pytest.approx(probability, abs=1e-6)
    assert any("not for clinical use" in text for text in findings["comments"])
    for result in (report, overlay):
        assert result.StudyInstanceUID == source.StudyInstanceUID
        assert result.PatientID == source.PatientID
        assert result.SeriesInstanceUID != source.SeriesInstanceUID
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    referenced = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert overlay.SamplesPerPixel == 3 and overlay.Rows > 0

    for kind, result in (("sr", report), ("sc", overlay)):
        written = tmp_path / f"{kind}.dcm"
        result.save_as(written, enforce_file_format=True)
        assert dciodvfy_errors(written) == [], kind

    (line,) = results_of(tmp_path / "outbox")
    assert_valid(line, "jsonl_record")
    assert line["prediction"] == expected["prediction"]
    assert line["scores"] == pytest.approx(expected["scores"], abs=1e-6)
    assert line["identifiers"]["fields"]["sop_instance_uid"] == source.SOPInstanceUID


def test_a_refused_image_gets_a_report_without_a_class_and_no_overlay(tmp_path):
    dx = inverted_dx(tmp_path)
    source = pydicom.dcmread(dx)
    expected = run_json(dx)
    assert expected["prediction"] is None and expected["ood"]["in_distribution"] is False
    with orthanc(tmp_path / "orthanc") as pacs:
        with node(tmp_path / "outbox", f"{PACS_AE}@127.0.0.1:{pacs.dicom_port}") as running:
            assert store(dx, running.port).returncode == 0
            objects = study_objects(pacs, source.StudyInstanceUID, 1)
            wait_for(lambda: not list((tmp_path / "outbox" / "pending").iterdir()), "outbox empty")
        assert len(pacs.study_instances(source.StudyInstanceUID)) == 1  # no overlay followed
    assert set(objects) == {ComprehensiveSRStorage}
    report = objects[ComprehensiveSRStorage]
    report.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    findings = sr_findings(report)
    assert findings["class"] is None and findings["scores"] == {}
    assert any(text.startswith("Not classified.") for text in findings["comments"])


def _variants(dx: Path, folder: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """``dx`` in every transfer syntax the node accepts, each its own SOP instance, with the
    storescu flags that propose it: made by dcmtk (JPEG, RLE) and by pydicom with
    pylibjpeg-openjpeg (JPEG 2000). storescu has no flag for JPEG Lossless process 14 (.57):
    flags None means pynetdicom sends that one."""
    made: dict[str, tuple[Path, tuple[str, ...] | None]] = {}

    def fresh(name: str) -> Path:
        ds = pydicom.dcmread(dx)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        return path

    made["explicit-little"] = (fresh("explicit-little"), ())
    made["implicit-little"] = (fresh("implicit-little"), ("-xi",))
    for name, tool, flags, propose in (
        ("jpeg-lossless-sv1", "dcmcjpeg", ("+e1",), ("-xs",)),
        ("jpeg-lossless", "dcmcjpeg", ("+el",), None),
        ("jpeg-baseline", "dcmcjpeg", ("+eb",), ("-xy",)),
        ("rle", "dcmcrle", (), ("-xr",)),
    ):
        plain = fresh(name + "-source")
        out = folder / f"{name}.dcm"
        subprocess.run([needs(tool), *flags, str(plain), str(out)], check=True)
        made[name] = (out, propose)
    for name, syntax, options, propose in (
        ("jpeg2000-lossless", "1.2.840.10008.1.2.4.90", {}, ("-xv",)),
        ("jpeg2000", "1.2.840.10008.1.2.4.91", {"j2k_cr": [10]}, ("-xw",)),
    ):
        ds = pydicom.dcmread(fresh(name + "-source"))
        ds.compress(syntax, **options)
        out = folder / f"{name}.dcm"
        ds.save_as(out, enforce_file_format=True)
        made[name] = (out, propose)
    return made


LOSSLESS = {
    "explicit-little",
    "implicit-little",
    "jpeg-lossless-sv1",
    "jpeg-lossless",
    "rle",
    "jpeg2000-lossless",
}


def _send_with_pynetdicom(path: Path, port: int) -> int:
    from pynetdicom import AE

    ds = pydicom.dcmread(path)
    sender = AE(ae_title=PACS_AE)
    sender.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = sender.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    return status.Status


def test_every_transfer_syntax_gives_the_scores_of_the_uncompressed_file(tmp_path):
    """storescu sends the knee in each accepted transfer syntax (received as sent); lossless
    ones score as the uncompressed file to 1e-6, the lossy ones (JPEG Baseline, JPEG 2000) give
    the same class."""
    dx = dx_from_picture(KNEE, tmp_path / "knee.dcm")
    variants = _variants(dx, tmp_path)
    reference = run_json(dx)["scores"]
    outbox = tmp_path / "outbox"
    nowhere = f"{PACS_AE}@127.0.0.1:{free_port()}"  # results stay in the outbox: not under test
    with node(outbox, nowhere) as running:
        for name, (path, flags) in variants.items():
            if flags is None:
                assert _send_with_pynetdicom(path, running.port) == 0x0000, name
                continue
            sent = store(path, running.port, *flags)
            assert sent.returncode == 0, (name, sent.stderr)
    lines = results_of(outbox)
    received = {line["identifiers"]["fields"]["sop_instance_uid"]: line for line in lines}
    for name, (path, _) in variants.items():
        line = received[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        syntax = pydicom.dcmread(line["path"], stop_before_pixels=True).file_meta.TransferSyntaxUID
        sent_as = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert syntax == ("1.2.840.10008.1.2" if name == "implicit-little" else sent_as), name
        assert line["prediction"] is not None, (name, line["error"])
        if name in LOSSLESS:
            assert line["scores"] == pytest.approx(reference, abs=1e-6), (name, syntax)
        else:
            assert max(reference, key=reference.get) == line["prediction"], name

    # The node's results.jsonl is btxrd-run's own JSON-lines file: resuming it over the
    # received images keeps every line and classifies nothing again.
    kept = sorted(Path(line["path"]) for line in lines)
    command = [str(Path(sys.executable).parent / "btxrd-run"), "--jsonl", "--resume"]
    audit = subprocess.run(
        [*command, "-o", str(outbox / "results.jsonl"), *map(str, kept)],
        capture_output=True,
        text=True,
    )
    assert audit.returncode == 0, audit.stderr
    assert f"resuming: {len(kept)} of {len(kept)} inputs already in" in audit.stderr
    assert results_of(outbox) == lines


def test_a_node_killed_with_results_pending_resends_them_with_the_same_uids(tmp_path):
    """The PACS is down: the results wait in the outbox. The node is killed (SIGKILL), the PACS
    comes up, the node starts again and sends them; sent again, the PACS still holds each once."""
    http_port, dicom_port = free_port(), free_port()
    destination = f"{PACS_AE}@127.0.0.1:{dicom_port}"
    dx = dx_from_picture(KNEE, tmp_path / "knee.dcm")
    source = pydicom.dcmread(dx)
    pending = tmp_path / "outbox" / "pending"
    with node(tmp_path / "outbox", destination) as running:
        assert store(dx, running.port).returncode == 0
        waiting = {p.name for p in wait_for(lambda: sorted(pending.glob("*.dcm")), "pending")}
        running.kill()
    assert len(waiting) == 2  # the report and the overlay, nothing sent
    with orthanc(tmp_path / "orthanc", http_port, dicom_port) as pacs:
        with node(tmp_path / "outbox", destination) as running:
            objects = study_objects(pacs, source.StudyInstanceUID, 2)
            wait_for(lambda: not list(pending.glob("*.dcm")), "outbox empty")
            assert {f"{ds.SOPInstanceUID}.dcm" for ds in objects.values()} == waiting
            assert store(dx, running.port).returncode == 0  # the same image again
            wait_for(lambda: len(results_of(tmp_path / "outbox")) == 2, "second result")
            wait_for(lambda: not list(pending.glob("*.dcm")), "outbox empty again")
        held = pacs.study_instances(source.StudyInstanceUID)
    assert sorted(i["MainDicomTags"]["SOPInstanceUID"] + ".dcm" for i in held) == sorted(waiting)


def test_a_film_with_non_conformant_patient_values_still_gets_its_results(tmp_path):
    """PACSes hold files with a Patient's Sex of 'Q' or dates that are not dates; highdicom
    refuses to copy those, so the results carry them empty, and dciodvfy passes them."""
    dx = dx_from_picture(
        KNEE, tmp_path / "odd.dcm", PatientSex="Q", StudyDate="notadate", StudyTime="99"
    )
    pending = tmp_path / "outbox" / "pending"
    with node(tmp_path / "outbox", f"{PACS_AE}@127.0.0.1:{free_port()}") as running:
        sent = store(dx, running.port)
        assert sent.returncode == 0, sent.stderr
        written = wait_for(
            lambda: len(found := sorted(pending.glob("*.dcm"))) == 2 and found, "results"
        )
    for path in written:
        result = pydicom.dcmread(path)
        assert result.StudyInstanceUID == pydicom.dcmread(dx).StudyInstanceUID
        assert result.get("PatientSex") in ("", None)
        assert dciodvfy_errors(path) == [], path.name
    (line,) = results_of(tmp_path / "outbox")
    assert line["prediction"] == run_json(dx)["prediction"]


def test_results_wait_for_a_pacs_that_is_down_and_go_once_it_is_up(tmp_path):
    """The node keeps trying (dicom_node.retry_s, doubling) while the PACS is down; once it is
    up, the waiting results arrive without a restart."""
    http_port, dicom_port = free_port(), free_port()
    config = tmp_path / "node.yaml"
    config.write_text("dicom_node:\n  retry_s: 1\n")
    dx = dx_from_picture(KNEE, tmp_path / "knee.dcm")
    pending = tmp_path / "outbox" / "pending"
    destination = f"{PACS_AE}@127.0.0.1:{dicom_port}"
    with node(tmp_path / "outbox", destination, "--config", str(config)) as running:
        assert store(dx, running.port).returncode == 0
        wait_for(lambda: "trying again in 1 s" in running.log(), "a failed send and a retry")
        assert len(list(pending.glob("*.dcm"))) == 2
        with orthanc(tmp_path / "orthanc", http_port, dicom_port) as pacs:
            study_objects(pacs, pydicom.dcmread(dx).StudyInstanceUID, 2)
            wait_for(lambda: not list(pending.glob("*.dcm")), "outbox empty")


def test_callers_off_the_allowlist_and_other_sop_classes_are_refused_at_association(tmp_path):
    with node(tmp_path / "outbox", f"{PACS_AE}@127.0.0.1:{free_port()}") as running:
        assert echo(running.port, PACS_AE).returncode == 0
        refused = echo(running.port, "INTRUDER")
        assert refused.returncode != 0
        assert "rejected: not on the allowlist" in wait_for(
            lambda: "INTRUDER" in running.log() and running.log(), "the rejection logged"
        )
        ct = pydicom_file("CT_small.dcm")
        sent = store(ct, running.port)
        assert sent.returncode != 0 and "No presentation context" in sent.stderr
        jpeg_ls = pydicom.dcmread(pydicom_file("MR_small_jpeg_ls_lossless.dcm"))
        assert _context_refused(running.port, jpeg_ls)  # a transfer syntax btxrd does not read
        assert echo(running.port, PACS_AE).returncode == 0  # still serving
        assert running.stop() == 130  # SIGTERM stops it as an interruption, as every command
    assert results_of(tmp_path / "outbox") == []


def _context_refused(port: int, ds: pydicom.Dataset) -> bool:
    """Whether the node refuses, in the association, a DX context in ``ds``'s transfer syntax."""
    from pydicom.uid import DigitalXRayImageStorageForPresentation
    from pynetdicom import AE

    sender = AE(ae_title=PACS_AE)
    sender.add_requested_context(
        DigitalXRayImageStorageForPresentation, ds.file_meta.TransferSyntaxUID
    )
    assoc = sender.associate("127.0.0.1", port, ae_title=NODE_AE)
    try:
        return not assoc.is_established or not assoc.accepted_contexts
    finally:
        if assoc.is_established:
            assoc.release()


# pydicom's own test files the node accepts: Secondary Captures in RLE (8 and 16 bits), JPEG
# Baseline (YBR) and JPEG 2000, with the storescu flag that proposes each one's syntax.
BUNDLED = {
    "SC_rgb_rle.dcm": "-xr",
    "SC_rgb_rle_16bit.dcm": "-xr",
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",
    "JPEG2000.dcm": "-xw",
}


def test_pydicoms_bundled_files_get_btxrd_runs_verdict(tmp_path):
    """Each bundled file sent by storescu is answered, and its record carries btxrd-run's
    verdict and scores on the same file (these are not radiographs: the gate may refuse them,
    the node must refuse them alike)."""
    with node(tmp_path / "outbox", f"{PACS_AE}@127.0.0.1:{free_port()}") as running:
        for name, flag in BUNDLED.items():
            sent = store(pydicom_file(name), running.port, flag)
            assert sent.returncode == 0, (name, sent.stderr)
    lines = {
        line["identifiers"]["fields"]["sop_instance_uid"]: line
        for line in results_of(tmp_path / "outbox")
    }
    for name in BUNDLED:
        path = pydicom_file(name)
        line = lines[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        expected = run_json(path)
        assert line["prediction"] == expected["prediction"], name
        assert line["error"] is None or expected["error"] is not None, name
        assert (line["scores"] or {}) == pytest.approx(expected["scores"] or {}, abs=1e-6), name
        assert line["ood"]["in_distribution"] == expected["ood"]["in_distribution"], name


def _bad_datasets(tmp_path: Path) -> dict[str, pydicom.Dataset]:
    good = pydicom.dcmread(dx_from_picture(KNEE, tmp_path / "good.dcm"))

    def variant(**changes) -> pydicom.Dataset:
        ds = copy.deepcopy(good)
        ds.SOPInstanceUID = generate_uid()
        for keyword, value in changes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return ds

    return {
        "truncated pixel data": variant(PixelData=good.PixelData[:1000]),
        "no pixel module": variant(PixelData=None, Rows=None, Columns=None),
        "decompression bomb": variant(Rows=65535, Columns=65535),
        "no study": variant(StudyInstanceUID=None),
    }


def test_malformed_datasets_get_a_failure_status_and_the_node_keeps_serving(tmp_path):
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian
    from pynetdicom import AE

    bad = _bad_datasets(tmp_path)
    with node(tmp_path / "outbox", f"{PACS_AE}@127.0.0.1:{free_port()}") as running:
        sender = AE(ae_title=PACS_AE)
        sender.add_requested_context(DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian)
        assoc = sender.associate("127.0.0.1", running.port, ae_title=NODE_AE)
        assert assoc.is_established
        statuses = {name: assoc.send_c_store(ds) for name, ds in bad.items()}
        good = pydicom.dcmread(tmp_path / "good.dcm")
        statuses["good"] = assoc.send_c_store(good)
        assoc.release()
        log = running.log()
    for name, ds in bad.items():
        status = statuses[name]
        assert 0xC000 <= status.Status <= 0xCFFF, name
        assert status.get("ErrorComment"), name
        assert f"{ds.SOPInstanceUID}: refused" in log, name
    assert "pixel" in statuses["decompression bomb"].ErrorComment.lower()
    assert statuses["good"].Status == 0x0000
