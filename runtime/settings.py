"""Every tunable of btxrd and its built-in default, in one place.

Each section of the YAML config is a frozen dataclass here. Its field defaults are the built-in
values; ``limits`` in a field's metadata is the one valid range, shared by the config validator
(``btxrd.runtime.config``) and the command-line flags (``range_of``). ``configs/default.yaml`` is
this module written out, and a test keeps the two equal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# One heatmap opacity for every overlay (btxrd-run --cam and btxrd-explain).
OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class Limits:
    """An inclusive range; ``open_low``/``open_high`` exclude an end."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def contains(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def describe(self) -> str:
        left = "(" if self.open_low else "["
        right = ")" if self.open_high else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}"


def _setting(default: Any, limits: Limits | None = None, nullable: bool = False) -> Any:
    return field(default=default, metadata={"limits": limits, "nullable": nullable})


@dataclass(frozen=True)
class PathSettings:
    model: str = "models/btxrd-demo.onnx"  # btxrd-run's model (BTXRD_MODEL overrides)
    checkpoint: str = "models/btxrd-demo.pt"  # btxrd-explain's PyTorch checkpoint
    data: str = "data/synthetic"  # a BTXRD-layout dataset folder (synthetic or real)


@dataclass(frozen=True)
class DecodeLimits:
    """Refuse absurd images before decoding them (decompression bombs, 1 x 1 pixels)."""

    max_pixels: int = _setting(100_000_000, Limits(1, 10**10))
    min_side: int = _setting(16, Limits(1, 10**5))
    max_aspect: float = _setting(20.0, Limits(1, 10**4))


@dataclass(frozen=True)
class InferenceSettings(DecodeLimits):
    threads: int | None = _setting(None, Limits(1, 256), nullable=True)  # None: every core
    batch_size: int = _setting(8, Limits(1, 1024))
    # JPEGs decoded at 1/2, 1/4 or 1/8 scale in the DCT domain: faster, pixels slightly
    # different from the exact decode; every record says which decode was used.
    fast_decode: bool = False
    # ... at the smallest scale whose sides are still this many times the input's: at 1x, the
    # demo model changed 3 of the bench's 200 top-1 classes; at 2x, none (bench/RESULTS.md).
    fast_decode_margin: int = _setting(2, Limits(1, 8))

    @property
    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_pixels, self.min_side, self.max_aspect)


@dataclass(frozen=True)
class CamSettings:
    out: str = "results/cam"  # btxrd-run --cam overlays
    alpha: float = _setting(OVERLAY_ALPHA, Limits(0, 1))


@dataclass(frozen=True)
class GradcamSettings:
    method: str = "gradcam"  # gradcam, gradcam++, hirescam, layercam, eigencam
    out: str = "results/explain"
    k: int = _setting(3, Limits(3, 5))  # gallery examples per row
    iou_threshold: float = _setting(0.5, Limits(0, 1, open_low=True, open_high=True))
    alpha: float = _setting(OVERLAY_ALPHA, Limits(0, 1))


@dataclass(frozen=True)
class ServeSettings:
    """``btxrd-serve``: where it listens and how much one upload and the queue may hold."""

    host: str = "127.0.0.1"  # loopback: the server has no authentication
    port: int = _setting(8000, Limits(0, 65535))  # 0: any free port (it is printed)
    max_upload_mb: int = _setting(64, Limits(1, 4096))  # one request's body, every file in it
    max_files: int = _setting(64, Limits(1, 10000))  # files in one request
    # Requests admitted at once (their uploads read, waiting or being classified); later ones
    # wait unread, so memory stays bounded however many clients send at once.
    queue_size: int = _setting(16, Limits(1, 1024))
    kept_results: int = _setting(64, Limits(1, 100000))  # recent heatmaps the page can fetch
    # An admitted request whose body stops for this long, or then falls below
    # min_body_kb_per_s on average, is cut off with 408: a slow sender frees its queue place.
    body_timeout_s: int = _setting(10, Limits(1, 3600))
    min_body_kb_per_s: int = _setting(16, Limits(0, 10**6))  # 0: no rate floor


@dataclass(frozen=True)
class ScaleSettings:
    """Folders classified shard by shard into a Parquet dataset (``btxrd.runtime.engine``)."""

    engine: str = "local"  # local (this process) or ray (a Ray cluster; extra [ray])
    shard_size: int = _setting(256, Limits(1, 10**6))  # inputs per part file: the unit of resume
    ray_address: str = ""  # "": start Ray on this machine; "auto" or HOST:PORT: join a cluster
    ray_cpus_per_worker: int = _setting(1, Limits(1, 256))  # CPUs per Ray worker (one session)


@dataclass(frozen=True)
class DicomNodeSettings:
    """``btxrd-serve dicom``: the DICOM node a PACS routes radiographs to (extra [dicom-node])."""

    ae_title: str = "BTXRD"  # this node's AE title: the PACS sends to it under this name
    # Loopback by default; 0.0.0.0 takes associations from other machines (open the port in the
    # firewall to the PACS only: the allowlist is the node's only guard).
    host: str = "127.0.0.1"
    port: int = _setting(11112, Limits(0, 65535))  # 0: any free port (it is printed)
    destination: str = ""  # AE@HOST:PORT where results are sent by C-STORE (the PACS)
    # Callers accepted, as AE@HOST; any other calling AE title or peer address is rejected at
    # association. Empty: the destination's AE title from the destination's host only.
    allow: list[str] = field(default_factory=list)
    outbox: str = "results/dicom-node"  # received images, objects not yet sent, results.jsonl
    max_associations: int = _setting(4, Limits(1, 64))  # at once; more are rejected (busy)
    max_pdu_kb: int = _setting(64, Limits(4, 16384))  # the largest PDU this node receives
    acse_timeout_s: int = _setting(30, Limits(1, 3600))  # association negotiation
    dimse_timeout_s: int = _setting(60, Limits(1, 3600))  # a C-STORE's reply
    network_timeout_s: int = _setting(60, Limits(1, 3600))  # a silent connection is closed
    retry_s: int = _setting(5, Limits(1, 3600))  # first wait before resending; doubles to 60x


SECTIONS: dict[str, type] = {
    "paths": PathSettings,
    "inference": InferenceSettings,
    "cam": CamSettings,
    "gradcam": GradcamSettings,
    "serve": ServeSettings,
    "scale": ScaleSettings,
    "dicom_node": DicomNodeSettings,
}


def defaults() -> dict[str, dict[str, Any]]:
    """The built-in configuration as plain data (what ``configs/default.yaml`` holds)."""
    return {name: dataclasses.asdict(section()) for name, section in SECTIONS.items()}


def field_of(section: str, key: str) -> dataclasses.Field:
    for item in dataclasses.fields(SECTIONS[section]):
        if item.name == key:
            return item
    raise KeyError(f"{section}.{key}")


def range_of(section: str, key: str) -> Limits:
    """The valid range of a numeric setting, for the config validator and click alike."""
    limits = field_of(section, key).metadata.get("limits")
    if limits is None:
        raise KeyError(f"{section}.{key} has no range")
    return limits
