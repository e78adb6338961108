"""The DICOM node: a Storage SCP a PACS routes radiographs to, answering with results.

Associations are accepted only from the allowlist (calling AE title and peer address together)
and only for the radiograph storage SOP classes in the transfer syntaxes btxrd decodes; anything
else is refused in the association, not after. Each received image is written to disk as it
arrives (pynetdicom's chunked receive: memory stays at a PDU, not a dataset), then goes through
``btxrd-run``'s own decode, model and gate, one image at a time. A result becomes a report (and
an overlay when classified, ``objects``), put in the durable outbox before the C-STORE is
answered, and a line of ``results.jsonl`` as ``btxrd-run --jsonl`` writes it. An image that
cannot be read gets a failure status with an error comment and a log line naming its SOP
Instance UID; the node keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    RLELossless,
)
from pynetdicom import AE, _config, evt
from pynetdicom.sop_class import (
    ComprehensiveSRStorage,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
    Verification,
)

from btxrd.runtime.model.classifier import Classifier, Prediction
from btxrd.runtime.node.objects import result_objects
from btxrd.runtime.node.outbox import Outbox, Peer, Sender, is_uid
from btxrd.runtime.output.jsonl import identity
from btxrd.runtime.output.overlay import cam_overlay, normalise_cam
from btxrd.runtime.output.report import jsonl_record
from btxrd.runtime.settings import DicomNodeSettings

log = logging.getLogger("btxrd.node")

# The radiograph storage SOP classes the node accepts; any other is refused in the association.
RADIOGRAPH_STORAGE = (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    SecondaryCaptureImageStorage,
)
# The transfer syntaxes btxrd decodes (the compressed ones with the pylibjpeg plugins of the
# [dicom-node] extra).
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000  # the dataset cannot be read or decoded (PS3.4 Table B.2-1)
OUT_OF_RESOURCES = 0xA700  # the node could not keep the image or its result
# Kept with each overlay: the longer side of the film it is drawn on (memory and PACS size).
OVERLAY_SIDE = 1024
_COMMENT_CHARS = 64  # Error Comment is LO


@dataclass
class Caller:
    """An allowed caller: an AE title from an address (``AE@HOST``)."""

    ae_title: str
    host: str

    @classmethod
    def parse(cls, text: str) -> Caller:
        from btxrd.runtime.errors import ConfigError

        ae, sep, host = text.strip().partition("@")
        if not sep or not ae or not host or len(ae) > 16:
            raise ConfigError(f"--allow {text!r}: expected AE@HOST, e.g. PACS@10.0.0.5")
        return cls(ae, host)


@dataclass
class NodeFolder:
    """What the node keeps on disk: received images, the outbox, the results."""

    root: Path
    received: Path = field(init=False)
    results: Path = field(init=False)

    def __post_init__(self) -> None:
        self.received = self.root / "received"
        self.results = self.root / "results.jsonl"
        self.received.mkdir(parents=True, exist_ok=True)


class DicomNode:
    """The node: ``start`` listens, ``stop`` closes associations and the sender."""

    def __init__(
        self,
        classifier: Classifier,
        settings: DicomNodeSettings,
        destination: Peer,
        allow: list[Caller],
        folder: Path,
    ) -> None:
        self.classifier = classifier
        self.settings = settings
        self.destination = destination
        self.allow = allow
        self.folder = NodeFolder(folder)
        self.outbox = Outbox(folder)
        self.sender = Sender(
            self.outbox, destination, self._send, settings.retry_s, idle=self._release
        )
        self._association: Any = None  # to the destination, used by the sender's thread only
        self._classify_lock = threading.Lock()  # one image at a time: memory stays bounded
        self._records_lock = threading.Lock()
        self._server: Any = None
        self.port: int | None = None

    def start(self) -> int:
        """Listen (``settings.host``/``port``); the port actually bound is returned."""
        _config.STORE_RECV_CHUNKED_DATASET = True  # each dataset straight to disk
        _config.STORE_SEND_CHUNKED_DATASET = True  # each result straight from its file
        ae = self._application_entity()
        for context in RADIOGRAPH_STORAGE:
            ae.add_supported_context(context, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [
            (evt.EVT_CONN_OPEN, _no_delay),
            (evt.EVT_REQUESTED, self._check_caller),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_C_STORE, self._store),
        ]
        self._server = ae.start_server(
            (self.settings.host, self.settings.port), block=False, evt_handlers=handlers
        )
        self.port = self._server.server_address[1]
        self.sender.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
        self.sender.stop()

    def _application_entity(self) -> AE:
        ae = AE(ae_title=self.settings.ae_title)
        ae.maximum_associations = self.settings.max_associations
        ae.maximum_pdu_size = self.settings.max_pdu_kb * 1024
        ae.acse_timeout = self.settings.acse_timeout_s
        ae.dimse_timeout = self.settings.dimse_timeout_s
        ae.network_timeout = self.settings.network_timeout_s
        ae.require_called_aet = True  # a PACS that calls another AE title reached the wrong node
        return ae

    # --- association --------------------------------------------------------------------------

    def _check_caller(self, event: Any) -> None:
        """Reject, at association, a caller that is not on the allowlist (AE title and address
        together)."""
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = assoc.requestor.address
        if any(c.ae_title == calling and _same_host(c.host, address) for c in self.allow):
            return
        log.warning("association from %s at %s rejected: not on the allowlist", calling, address)
        # Rejected permanent, by the service user, calling AE title not recognised.
        assoc.acse.send_reject(0x01, 0x01, 0x03)

    # --- C-STORE ------------------------------------------------------------------------------

    def _store(self, event: Any) -> Dataset | int:
        sop_uid = str(event.request.AffectedSOPInstanceUID or "").strip()
        try:
            return self._classify_received(Path(event.dataset_path), sop_uid)
        except OSError as exc:
            log.error("%s: could not keep the image or its result (%s)", sop_uid, exc)
            return _status(OUT_OF_RESOURCES, f"btxrd could not store it: {exc.strerror or exc}")

    def _classify_received(self, arrived: Path, sop_uid: str) -> Dataset | int:
        if not is_uid(sop_uid):
            return _refuse(sop_uid or "(no SOP Instance UID)", "not a valid SOP Instance UID")
        try:
            header = dcmread(arrived, stop_before_pixels=True)
        except (InvalidDicomError, ValueError, TypeError, AttributeError, EOFError, OSError) as exc:
            return _refuse(sop_uid, f"malformed dataset ({exc})")
        if "StudyInstanceUID" not in header or not is_uid(str(header.StudyInstanceUID)):
            return _refuse(sop_uid, "no valid Study Instance UID")
        kept = self.folder.received / f"{sop_uid}.dcm"
        shutil.move(arrived, kept)
        with self._classify_lock:
            prediction = self._predict(kept)
        if prediction.error is not None and not prediction.refused:
            self._record(prediction, kept)
            return _refuse(sop_uid, prediction.error.removeprefix(f"{kept}: "))
        header.SOPInstanceUID = sop_uid  # the request's UID is the one the PACS knows
        overlay = self._overlay(prediction)
        try:
            objects = result_objects(header, prediction, self.classifier.info, overlay)
        except (ValueError, TypeError, AttributeError) as exc:  # highdicom on a value it refuses
            self._record(prediction, kept)
            log.exception("%s: classified, but its report could not be made", sop_uid)
            return _status(CANNOT_UNDERSTAND, f"btxrd could not make its report: {exc}")
        self.outbox.put(objects.report)
        if objects.overlay is not None:
            self.outbox.put(objects.overlay)
        self._record(prediction, kept)
        self.sender.wake()
        verdict = (
            "not classified (out of distribution)" if prediction.refused else prediction.prediction
        )
        log.info("%s: %s; results queued for %s", sop_uid, verdict, self.destination)
        return SUCCESS

    def _predict(self, path: Path) -> Prediction:
        with_cam = self.classifier.info.has_cam
        (prediction,) = self.classifier.predict_many(
            [path], with_cam=with_cam, keep_side=OVERLAY_SIDE
        )
        return prediction

    def _overlay(self, prediction: Prediction) -> np.ndarray | None:
        if prediction.prediction is None or prediction.cam is None or prediction.image is None:
            return None
        index = self.classifier.class_names.index(prediction.prediction)
        cam01 = normalise_cam(prediction.cam[index])
        if cam01 is None:
            return None  # a flat map: the report says the class, no overlay to show
        info = self.classifier.info
        picture, _ = cam_overlay(
            prediction.image,
            cam01,
            name=prediction.image_name,
            source=prediction.path or prediction.image_name,
            class_name=prediction.prediction,
            probability=prediction.scores[prediction.prediction],
            prediction=prediction.prediction,
            model_sha256=info.sha256,
            intended_use=info.metadata.intended_use,
        )
        return np.asarray(picture.convert("RGB"))

    def _record(self, prediction: Prediction, kept: Path) -> None:
        """Append the line ``btxrd-run --jsonl`` writes for ``kept``, whole, to results.jsonl."""
        line = jsonl_record(
            prediction,
            kept.name,
            self.classifier.info,
            identity(kept),
            self.classifier.result_settings(),
        )
        data = (json.dumps(line) + "\n").encode("utf-8")
        with self._records_lock:
            fd = os.open(self.folder.results, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- sending ------------------------------------------------------------------------------

    def _send(self, destination: Peer, files: list[Path]) -> list[Path]:
        """C-STORE ``files`` to ``destination`` over the open association (opened when there is
        none); those it confirmed."""
        assoc = self._open_association(destination)
        if assoc is None:
            return []
        confirmed = []
        try:
            for path in files:
                if not assoc.is_established:
                    break
                try:
                    status = assoc.send_c_store(path)  # chunked from the file, never decoded
                except (ValueError, OSError, InvalidDicomError) as exc:
                    log.error("%s: %s not sent (%s)", destination, path.stem, exc)
                    continue
                code = getattr(status, "Status", None)
                if code is not None and (code == SUCCESS or 0xB000 <= code <= 0xBFFF):
                    confirmed.append(path)
                else:
                    log.warning("%s: %s not stored (status %s)", destination, path.stem, code)
        finally:
            if not assoc.is_established:
                self._association = None
        return confirmed

    def _open_association(self, destination: Peer) -> Any:
        if self._association is not None and self._association.is_established:
            return self._association
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = self.settings.acse_timeout_s
        ae.dimse_timeout = self.settings.dimse_timeout_s
        ae.network_timeout = self.settings.network_timeout_s
        for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
        )
        if not assoc.is_established:
            log.warning("%s: no association (rejected, aborted or unreachable)", destination)
            return None
        self._association = assoc
        return assoc

    def _release(self) -> None:
        if self._association is not None and self._association.is_established:
            self._association.release()
        self._association = None


def _no_delay(event: Any) -> None:
    """Send each PDU at once (TCP_NODELAY): pynetdicom leaves Nagle's algorithm on, and with the
    peer's delayed acknowledgement every C-STORE then waited about 40 ms for its last segment
    (60 results took 2.4 s to send on loopback, 0.43 s without the wait)."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _same_host(allowed: str, address: str) -> bool:
    if allowed == address:
        return True
    try:
        return address in {info[4][0] for info in socket.getaddrinfo(allowed, None)}
    except OSError:
        return False


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:_COMMENT_CHARS]
    return status


def _refuse(sop_uid: str, cause: str) -> Dataset:
    log.error("%s: refused: %s", sop_uid, cause)
    return _status(CANNOT_UNDERSTAND, cause)
