"""Helpers of the server tests: the real ``btxrd-serve`` in its own process on a free port, and
plain HTTP (the standard library's client) to talk to it. No mocks; readiness is polled with a
deadline, never assumed after a sleep."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES = REPO_ROOT / "models" / "samples"
SERVE = [sys.executable, "-m", "btxrd.runtime.serve.cli"]
_URL = re.compile(r"serving (http://\S+/)")


def sample_images() -> list[Path]:
    return sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))


@dataclass
class RunningServer:
    """A ``btxrd-serve`` process; ``stderr`` collects its lines as they come."""

    process: subprocess.Popen
    tmpdir: Path
    url: str = ""
    stderr: list[str] = field(default_factory=list)
    # What TMPDIR held once the server was ready (libraries may leave a file there at start).
    baseline: frozenset[str] = frozenset()

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``sig`` (Ctrl-C by default) and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise

    def log(self) -> str:
        return "\n".join(self.stderr)

    def peak_rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text(encoding="utf-8")
        return next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")
        )


def start_server(
    tmpdir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    deadline: float = 90.0,
    program: Sequence[str] = SERVE,
    cwd: Path = REPO_ROOT,
) -> RunningServer:
    """Start ``btxrd-serve --port 0`` (``program``, run in ``cwd``) with a private TMPDIR;
    return once /api/health answers."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k not in ("BTXRD_MODEL", "BTXRD_CONFIG")}
    environment.update({"TMPDIR": str(tmpdir), **(env or {})})
    process = subprocess.Popen(
        [*program, "--port", "0", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=environment,
        cwd=cwd,
        text=True,
    )
    server = RunningServer(process, tmpdir)
    threading.Thread(target=_collect, args=(process, server.stderr), daemon=True).start()
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        found = next((m.group(1) for line in server.stderr if (m := _URL.search(line))), None)
        if found and not server.url:
            server.url = found
        if server.url and _healthy(server):
            server.baseline = frozenset(_listing(tmpdir))
            return server
        if process.poll() is not None:
            raise RuntimeError(f"btxrd-serve exited with {process.returncode}:\n{server.log()}")
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"btxrd-serve not ready within {deadline} s:\n{server.log()}")


def _collect(process: subprocess.Popen, lines: list[str]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line.rstrip("\n"))


def _healthy(server: RunningServer) -> bool:
    try:
        status, _, _ = request(server, "GET", "/api/health", timeout=2)
    except OSError:
        return False
    return status == 200


def request(
    server: RunningServer,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; (status, headers with lower-case names, body)."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        chunked = (headers or {}).get("Transfer-Encoding") == "chunked"
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def multipart(files: Sequence[tuple[str, bytes]], field_name: str = "files") -> tuple[bytes, str]:
    """A multipart/form-data body with one file field per (name, bytes); (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
            f'filename="{quoted}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def classify(server: RunningServer, files: Sequence[tuple[str, bytes]]) -> tuple[int, Any]:
    body, kind = multipart(files)
    status, _, answer = request(server, "POST", "/api/classify", body, {"Content-Type": kind})
    return status, json.loads(answer)


def classify_paths(server: RunningServer, paths: Sequence[Path]) -> tuple[int, Any]:
    return classify(server, [(p.name, p.read_bytes()) for p in paths])


def cli_json(*args: object, cwd: Path = REPO_ROOT) -> dict:
    """``btxrd-run --json ARGS`` in its own process; its document."""
    environment = {k: v for k, v in os.environ.items() if k not in ("BTXRD_MODEL", "BTXRD_CONFIG")}
    done = subprocess.run(
        [sys.executable, "-m", "btxrd.runtime.cli.run", "--json", "--quiet", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=300,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def leftovers(server: RunningServer) -> list[str]:
    """Whatever the server added to its private TMPDIR since it was ready (uploads, spooled
    parts)."""
    return sorted(set(_listing(server.tmpdir)) - server.baseline)


def _listing(folder: Path) -> list[str]:
    return [str(p.relative_to(folder)) for p in folder.rglob("*")]


# An 11,500 x 8,600 RGB image: 98.9 Mpx, just under inference.max_pixels (100 Mpx).
LARGE_SIZE = (11_500, 8_600)


def write_large_rgb_jpeg(path: Path) -> Path:
    """A smooth ``LARGE_SIZE`` RGB JPEG (about 1.7 MB on disk, 297 MB of pixels decoded): what
    the memory bound of a request is measured with, by the tests and by ``bench/serve.py``."""
    import numpy as np
    from PIL import Image

    width, height = LARGE_SIZE
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.dstack(
        [((x + y * 0.5) % 256).astype(np.uint8), ((x * 0.3 + y) % 256).astype(np.uint8),
         ((255 - x) * 0.5 + y * 0.2).astype(np.uint8)]
    )  # fmt: skip
    Image.fromarray(rgb).save(path, quality=70)
    return path
