"""btxrd-serve's figures: start to first answer, upload-to-result per image against btxrd-run's
warm per-image time on the same files in the same run, 50 uploads at once (time, peak memory),
and the installed size of the ``[serve]`` extra. Prints a table, writes ``bench/serve.json``.

    .venv/bin/python bench/serve.py [--copies 10] [--reps 3] [--no-size]

With ``--bounds`` it measures only what a client cannot push past its bounds, and writes
``bench/serve_bounds.json``: the server's peak memory for one request of four 98.9 Mpx RGB
JPEGs, and how long a normal upload waits behind 16 clients trickling a byte every 5 s.

    .venv/bin/python bench/serve.py --bounds

The server is the real one (its own process, loopback, the shipped demo model), driven over
HTTP by the helpers the tests use (``tests/serve/serve_support.py``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tomllib

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests" / "serve"))
from machine import describe  # noqa: E402
from serve_support import (  # noqa: E402
    LARGE_SIZE,
    classify,
    classify_paths,
    cli_json,
    sample_images,
    start_server,
    write_large_rgb_jpeg,
)

TARGET_RATIO = 1.5  # upload-to-result per image may take at most 1.5 x btxrd-run's warm time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10, help="copies of the 6 samples")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each timing")
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--no-size", action="store_true", help="skip the install-size venv")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--bounds", action="store_true", help="only the memory and time bounds")
    args = parser.parse_args()
    if args.bounds:
        return _bounds(args.out or BENCH / "serve_bounds.json")
    args.out = args.out or BENCH / "serve.json"

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as scratch:
        folder = Path(scratch)
        files = _copies(folder / "images", args.copies)
        results: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": describe(),
            "images": {"count": len(files), "from": "models/samples", "copies": args.copies},
            "start_to_first_answer_s": _start_to_first_answer(folder, args.reps),
        }
        results["per_image"] = _per_image(folder, files, args.reps)
        results["concurrent"] = _concurrent(folder, args.concurrent)
    if not args.no_size:
        results["serve_extra"] = _extra_size()
    _print(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


def _bounds(out: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-serve-bounds-") as scratch:
        folder = Path(scratch)
        results = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": describe(),
            "large_request": _large_request(folder),
            "trickling_clients": _trickling(folder),
        }
    print(json.dumps(results, indent=2))
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


def _large_request(folder: Path) -> dict[str, Any]:
    """Peak memory of the whole server for one request of four 11,500 x 8,600 RGB JPEGs."""
    width, height = LARGE_SIZE
    jpeg = write_large_rgb_jpeg(folder / "large.jpg")
    data = jpeg.read_bytes()
    server = start_server(folder / "tmp-large", "--quiet")
    try:
        before = server.peak_rss_kib()
        started = time.perf_counter()
        status, _ = classify(server, [(f"large{i}.jpg", data) for i in range(4)])
        wall = time.perf_counter() - started
        peak = server.peak_rss_kib()
    finally:
        server.stop()
    return {
        "images": 4,
        "pixels_each": width * height,
        "upload_mb": round(4 * len(data) / 1e6, 1),
        "status": status,
        "wall_s": round(wall, 2),
        "peak_rss_mb_before": round(before / 1024, 1),
        "peak_rss_mb_after": round(peak / 1024, 1),
    }


def _trickling(folder: Path, clients: int = 16) -> dict[str, Any]:
    """A normal upload's wait while ``clients`` hold every queue place trickling a byte every
    5 s (each is cut off with 408 by serve.body_timeout_s and serve.min_body_kb_per_s)."""
    import socket

    server = start_server(folder / "tmp-trickle", "--quiet")
    stop = threading.Event()
    body = b"\0" * 10_000

    def trickle() -> None:
        with socket.create_connection((server.host, server.port), timeout=120) as connection:
            head = (
                "POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            connection.sendall(head.encode())
            for byte in body:
                if stop.wait(5):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(clients)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while json.loads(_get(server, "/api/health"))["queue"]["admitted"] < clients:
            if time.monotonic() > deadline:
                raise RuntimeError("the trickling clients were never admitted")
            time.sleep(0.05)
        sample = sample_images()[0]
        started = time.perf_counter()
        status, _ = classify_paths(server, [sample])
        waited = time.perf_counter() - started
    finally:
        stop.set()
        server.stop()
    return {"clients": clients, "status": status, "upload_waited_s": round(waited, 2)}


def _get(server: Any, path: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"{server.url.rstrip('/')}{path}", timeout=30) as answer:
        return answer.read()


def _copies(folder: Path, copies: int) -> list[Path]:
    """``copies`` of each sample radiograph under distinct names."""
    folder.mkdir(parents=True)
    made = []
    for k in range(copies):
        for sample in sample_images():
            target = folder / f"{k:02d}_{sample.name}"
            shutil.copyfile(sample, target)
            made.append(target)
    return made


def _start_to_first_answer(folder: Path, reps: int) -> dict[str, float]:
    """Process start (model load included) to the first classified upload, and btxrd-run's
    whole run on the same one image for comparison."""
    sample = sample_images()[0]
    served, cli = [], []
    for rep in range(reps):
        started = time.perf_counter()
        server = start_server(folder / f"tmp-start-{rep}", "--quiet", deadline=120)
        status, _ = classify_paths(server, [sample])
        served.append(time.perf_counter() - started)
        assert status == 200
        server.stop()
        started = time.perf_counter()
        cli_json(sample)
        cli.append(time.perf_counter() - started)
    return {
        "serve_median": round(statistics.median(served), 3),
        "serve_all": [round(s, 3) for s in served],
        "btxrd_run_one_image_median": round(statistics.median(cli), 3),
    }


def _per_image(folder: Path, files: list[Path], reps: int) -> dict[str, Any]:
    """Milliseconds per image: btxrd-run's warm loop (its summary's wall time, model already
    loaded) and the server's upload-to-result, one file per request and all in one request;
    interleaved so both see the same machine state."""
    server = start_server(folder / "tmp-per-image", "--quiet")
    try:
        classify_paths(server, files[:6])  # warm-up: first session runs are slower
        cli_ms, single_ms, batch_ms = [], [], []
        for _ in range(reps):
            document = cli_json(*files)
            assert document["summary"]["classified"] == len(files)
            cli_ms.append(1000 * document["summary"]["wall_seconds"] / len(files))
            started = time.perf_counter()
            for path in files:
                status, _ = classify_paths(server, [path])
                assert status == 200
            single_ms.append(1000 * (time.perf_counter() - started) / len(files))
            started = time.perf_counter()
            status, _ = classify_paths(server, files)
            assert status == 200
            batch_ms.append(1000 * (time.perf_counter() - started) / len(files))
    finally:
        server.stop()
    cli, single, batch = map(statistics.median, (cli_ms, single_ms, batch_ms))
    return {
        "btxrd_run_warm_ms": round(cli, 2),
        "serve_one_file_per_request_ms": round(single, 2),
        "serve_all_files_in_one_request_ms": round(batch, 2),
        "ratio_one_per_request": round(single / cli, 2),
        "ratio_one_request": round(batch / cli, 2),
        "target_ratio": TARGET_RATIO,
        "reps": reps,
    }


def _concurrent(folder: Path, count: int) -> dict[str, Any]:
    """``count`` single-image uploads sent at once: all answered? how long? peak memory?"""
    server = start_server(folder / "tmp-concurrent", "--quiet")
    try:
        samples = sample_images()
        classify_paths(server, samples)
        before = server.peak_rss_kib()
        barrier = threading.Barrier(count)

        def send(i: int) -> int:
            path = samples[i % len(samples)]
            barrier.wait()
            return classify(server, [(path.name, path.read_bytes())])[0]

        started = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            statuses = list(pool.map(send, range(count)))
        wall = time.perf_counter() - started
        after = server.peak_rss_kib()
    finally:
        server.stop()
    return {
        "uploads": count,
        "answered_200": statuses.count(200),
        "wall_s": round(wall, 3),
        "peak_rss_mb_before": round(before / 1024, 1),
        "peak_rss_mb_after": round(after / 1024, 1),
    }


def _extra_size() -> dict[str, Any]:
    """Download and installed size of the [serve] extra's packages (beyond the runtime's own
    click), in a fresh virtual environment."""
    wanted = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["serve"]
    with tempfile.TemporaryDirectory(prefix="bench-serve-size-") as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "-q", "--disable-pip-version-check"]
        wheels = Path(scratch) / "wheels"
        subprocess.run([*pip, "download", "-d", wheels, *wanted], check=True)
        subprocess.run([*pip, "install", "--no-index", "--find-links", wheels, *wanted], check=True)
        # Every file each distribution's RECORD lists (compiled .pyc included), as installed.
        code = (
            "import json, os; from importlib import metadata\n"
            "print(json.dumps({d.metadata['Name'].lower(): sum(\n"
            "    os.path.getsize(d.locate_file(f)) for f in d.files or []\n"
            "    if os.path.isfile(d.locate_file(f))) for d in metadata.distributions()}))\n"
        )
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=scratch,  # not the checkout, whose btxrd.egg-info would be counted too
        )
        sizes = json.loads(done.stdout)
        downloaded = {p.name: p.stat().st_size for p in wheels.iterdir()}
    base = {"pip", "setuptools", "click"}  # the venv's own, and the runtime's click
    extra = {name: size for name, size in sizes.items() if name not in base}
    return {
        "requirements": wanted,
        "installed_mb": round(sum(extra.values()) / 1e6, 2),
        "download_mb": round(
            sum(s for n, s in downloaded.items() if not n.startswith("click-")) / 1e6, 2
        ),
        "packages_installed_kb": {n: round(s / 1e3) for n, s in sorted(extra.items())},
    }


def _print(results: dict[str, Any]) -> None:
    start = results["start_to_first_answer_s"]
    per = results["per_image"]
    many = results["concurrent"]
    rows = [
        (
            "images",
            f"{results['images']['count']} ({results['images']['copies']} copies of the samples)",
        ),
        (
            "start to first answer",
            f"{start['serve_median']:.2f} s (btxrd-run on one image: "
            f"{start['btxrd_run_one_image_median']:.2f} s)",
        ),
        ("btxrd-run warm, per image", f"{per['btxrd_run_warm_ms']:.1f} ms"),
        (
            "serve, one file per request",
            f"{per['serve_one_file_per_request_ms']:.1f} ms "
            f"({per['ratio_one_per_request']:.2f} x; target <= {TARGET_RATIO})",
        ),
        (
            "serve, all files in one request",
            f"{per['serve_all_files_in_one_request_ms']:.1f} ms ({per['ratio_one_request']:.2f} x)",
        ),
        (
            f"{many['uploads']} uploads at once",
            f"{many['answered_200']} answered in "
            f"{many['wall_s']:.2f} s; peak RSS {many['peak_rss_mb_before']:.0f} -> "
            f"{many['peak_rss_mb_after']:.0f} MB",
        ),
    ]
    if "serve_extra" in results:
        size = results["serve_extra"]
        rows.append(
            (
                "[serve] extra",
                f"{size['download_mb']:.1f} MB download, {size['installed_mb']:.1f} MB installed",
            )
        )
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
