"""Result objects on their way to the PACS: a durable outbox on disk and the one sender.

Each object is written whole (``atomic``) into ``pending/`` under its SOP Instance UID before the
node answers the C-STORE that brought its image, and is deleted only after the destination
confirms it (a success or warning status). A node killed in between resends what is pending
when it starts again, with the same UIDs (``objects.result_uid``): the PACS holds each object
once. An unreachable destination is tried again, first after ``retry_s`` seconds, the wait
doubling up to 60 times that; nothing is dropped.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from btxrd.runtime.errors import ConfigError
from btxrd.runtime.output.atomic import atomic_open

log = logging.getLogger("btxrd.node")

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MAX_BACKOFF = 60  # times retry_s
IDLE_S = 2.0  # the association to the destination is released after this long with nothing to send


@dataclass(frozen=True)
class Peer:
    """Another DICOM application entity: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, what: str) -> Peer:
        """``AE@HOST:PORT`` (the form of ``--destination``)."""
        match = re.fullmatch(r"([^@]{1,16})@(.+):([0-9]{1,5})", text.strip())
        if match is None or not 0 < int(match.group(3)) < 65536:
            raise ConfigError(f"{what} {text!r}: expected AE@HOST:PORT, e.g. PACS@10.0.0.5:4242")
        return cls(match.group(1), match.group(2), int(match.group(3)))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def is_uid(text: str) -> bool:
    """A DICOM UID (digits and dots, at most 64 characters): safe as a file name."""
    return len(text) <= 64 and _UID.match(text) is not None


class Outbox:
    """``folder/pending``: one file per object not yet confirmed by the destination."""

    def __init__(self, folder: Path) -> None:
        self.pending = folder / "pending"
        self.pending.mkdir(parents=True, exist_ok=True)

    def put(self, dataset: Dataset) -> Path:
        """Write ``dataset`` whole under its SOP Instance UID (the same object again replaces
        its earlier copy: same UID, same content)."""
        path = self.pending / f"{dataset.SOPInstanceUID}.dcm"
        with atomic_open(path, "wb", encoding=None) as handle:
            dataset.save_as(handle, enforce_file_format=True)
        return path

    def waiting(self) -> list[Path]:
        """The objects not yet confirmed, oldest first."""
        found = [p for p in self.pending.glob("*.dcm") if is_uid(p.stem)]
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))


class Sender:
    """Sends the outbox to the destination on its own thread, in order, until stopped."""

    def __init__(
        self,
        outbox: Outbox,
        destination: Peer,
        send: Callable[[Peer, list[Path]], list[Path]],
        retry_s: float,
        idle: Callable[[], None] = lambda: None,
    ) -> None:
        self._outbox = outbox
        self._destination = destination
        self._send = send  # sends files, returns those the destination confirmed
        self._idle = idle  # called when nothing has been sent for IDLE_S (closes the association)
        self._retry_s = retry_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="btxrd-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._send_until_stopped()
        finally:
            self._idle()

    def _send_until_stopped(self) -> None:
        backoff = 1
        while not self._stop.is_set():
            self._wake.clear()
            waiting = self._outbox.waiting()
            if not waiting:
                # One association carries a stream of results; it closes once the stream stops.
                if not self._wake.wait(IDLE_S):
                    self._idle()
                    self._wake.wait()
                continue
            try:
                confirmed = self._send(self._destination, waiting)
            except Exception:  # a sender that dies would strand every later result
                log.exception("sending to %s failed", self._destination)
                confirmed = []
            for path in confirmed:
                path.unlink(missing_ok=True)
            if len(confirmed) == len(waiting):
                backoff = 1
                continue
            wait = self._retry_s * backoff
            log.warning(
                "%s: %d of %d objects not confirmed; trying again in %g s",
                self._destination,
                len(waiting) - len(confirmed),
                len(waiting),
                wait,
            )
            backoff = min(backoff * 2, _MAX_BACKOFF)
            self._stop.wait(wait)
