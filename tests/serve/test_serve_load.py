"""Load and stopping: 50 uploads at once all get their answers through a bounded queue with
bounded memory; Ctrl-C (and SIGTERM) stop the server with the exit code every btxrd command
uses for an interruption."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from serve_support import classify, leftovers, request, sample_images, start_server

pytest.importorskip("starlette")

CONCURRENT = 50
QUEUE = 4


@pytest.fixture(scope="module")
def queued_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("queued")
    config = folder / "serve.yaml"
    config.write_text(f"serve:\n  queue_size: {QUEUE}\n", encoding="utf-8")
    running = start_server(folder / "tmp", "--quiet", "--config", str(config))
    yield running
    running.stop()


def _health(server) -> dict:
    return json.loads(request(server, "GET", "/api/health")[2])


@pytest.mark.slow
def test_fifty_uploads_at_once_all_get_their_answer(queued_server):
    samples = sample_images()
    expected = {}
    for path in samples:
        status, served = classify(queued_server, [(path.name, path.read_bytes())])
        assert status == 200
        expected[path.name] = served["results"][0]["scores"]
    before_kib = queued_server.peak_rss_kib()
    start = threading.Barrier(CONCURRENT)

    def send(i: int):
        path = samples[i % len(samples)]
        start.wait()
        return path.name, classify(queued_server, [(path.name, path.read_bytes())])

    with ThreadPoolExecutor(CONCURRENT) as pool:
        answers = list(pool.map(send, range(CONCURRENT)))
    assert len(answers) == CONCURRENT
    for name, (status, served) in answers:
        assert status == 200, served
        (record,) = served["results"]
        assert record["image_name"] == name
        assert record["scores"] == pytest.approx(expected[name], abs=1e-6)
    health = _health(queued_server)
    assert health["queue"]["admitted"] == 0 and health["queue"]["waiting"] == 0
    assert 1 <= health["queue"]["most_admitted"] <= QUEUE
    assert health["answered"] >= CONCURRENT + len(samples)
    # 50 small uploads through a queue of 4: memory grows by far less than 50 decodes would take.
    growth_mb = (queued_server.peak_rss_kib() - before_kib) / 1024
    assert growth_mb < 200, f"peak memory grew by {growth_mb:.0f} MB"
    assert leftovers(queued_server) == []
    assert "Traceback" not in queued_server.log()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_server_cleanly(tmp_path, sig):
    server = start_server(tmp_path / "tmp")
    port = server.port
    assert server.stop(sig) == 130
    assert "Traceback" not in server.log()
    assert server.log().splitlines()[-1] == "btxrd-serve: interrupted"
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_ctrl_c_while_uploads_are_queued_still_stops(tmp_path):
    server = start_server(tmp_path / "tmp", "--config", _config(tmp_path, "queue_size: 1"))
    path = sample_images()[3]  # the largest sample
    results: list = []

    def send() -> None:
        try:
            results.append(classify(server, [(path.name, path.read_bytes())] * 8)[0])
        except OSError as exc:  # the server went away before answering this one
            results.append(type(exc).__name__)

    senders = [threading.Thread(target=send) for _ in range(6)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _health(server)["queue"]["admitted"] == 0:
        time.sleep(0.01)
    started = time.monotonic()
    assert server.stop(signal.SIGINT, timeout=30) == 130
    assert time.monotonic() - started < 20
    for sender in senders:
        sender.join(30)
    assert len(results) == 6
    assert all(r in (200, 503) or isinstance(r, str) for r in results), results
    assert "Traceback" not in server.log()


def _config(folder, line: str) -> str:
    config = folder / "serve.yaml"
    config.write_text(f"serve:\n  {line}\n", encoding="utf-8")
    return str(config)
