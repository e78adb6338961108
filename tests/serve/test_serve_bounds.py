"""btxrd-serve stays bounded whatever a client sends, and answers only its own page.

- same origin: a form or script on another site is refused (403) before anything is read;
- time: a body that stops or trickles is cut off (408), so slow clients cannot hold the queue;
- the export endpoint reads linearly, parses off the event loop, and a deeply nested body is a
  400, never a 500;
- memory: one request of several ~99 Mpx RGB images peaks at one decoded image, not all of them.
"""

from __future__ import annotations

import importlib.util
import json
import select
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from serve_support import (
    classify,
    multipart,
    request,
    sample_images,
    start_server,
    write_large_rgb_jpeg,
)

from btxrd.runtime.text import name_bytes

pytest.importorskip("starlette")

CROSS_SITE = [
    {"Origin": "http://attacker.example", "Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://attacker.example"},
    {"Sec-Fetch-Site": "same-site"},
    {"Origin": "null"},  # a sandboxed frame or a file:// page
]


def _document(server) -> bytes:
    status, answer = classify(server, [(p.name, p.read_bytes()) for p in sample_images()[:1]])
    assert status == 200
    return json.dumps({"results": answer["results"]}).encode()


@pytest.mark.parametrize("headers", CROSS_SITE, ids=["form", "origin", "same-site", "null"])
def test_a_cross_site_post_is_refused(server, headers):
    """A plain HTML form on another site posting to the export (the browser would save the
    file) or to classify: 403 with one line, nothing processed."""
    body = _document(server)
    for path in ("/api/export?format=csv", "/api/classify"):
        kind = "application/x-www-form-urlencoded"
        status, answer_headers, answer = request(
            server, "POST", path, body, {"Content-Type": kind, **headers}
        )
        assert status == 403, (path, answer)
        assert "cross-site request refused" in json.loads(answer)["error"]
        assert "content-security-policy" in answer_headers


def test_the_pages_own_origin_and_tools_without_one_pass(server):
    body = _document(server)
    own = f"http://{server.host}:{server.port}"
    for headers in (
        {"Origin": own, "Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},
    ):
        status, _, _ = request(
            server,
            "POST",
            "/api/export?format=csv",
            body,
            {"Content-Type": "application/json", **headers},
        )
        assert status == 200, headers


def test_the_host_refusal_is_json_with_the_security_headers(server):
    status, headers, answer = request(
        server, "GET", "/api/health", headers={"Host": "attacker.example"}
    )
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert "not a name of this server" in json.loads(answer)["error"]
    assert "content-security-policy" in headers and headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/api/classify", "/api/export", "/api/clear"])
def test_get_on_a_post_route_is_405(server, path):
    status, headers, answer = request(server, "GET", path)
    assert status == 405 and headers["allow"] == "POST"
    assert "send a POST request" in json.loads(answer)["error"]


def test_a_deeply_nested_export_body_is_a_400(server):
    body = b'{"results": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    status, _, answer = request(
        server, "POST", "/api/export?format=json", body, {"Content-Type": "application/json"}
    )
    assert status == 400, answer
    assert "results document" in json.loads(answer)["error"]
    assert "internal error" not in server.log()


def test_every_csv_cell_is_guarded(server):
    """A record sent back with a formula where a flag or a number belongs is refused; text
    cells get the apostrophe."""
    records = json.loads(_document(server))["results"]
    formula = '=HYPERLINK("http://attacker.example")'
    for key, value in (("in_distribution", formula), ("confidence", formula)):
        record = json.loads(json.dumps(records[0]))
        if key == "in_distribution":
            record["ood"] = {**(record["ood"] or {}), "in_distribution": value}
        else:
            record[key] = value
        status, _, _ = request(
            server,
            "POST",
            "/api/export?format=csv",
            json.dumps({"results": [record]}).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 400, key
    record = {**records[0], "prediction": formula, "image_name": "@SUM(A1)"}
    status, _, text = request(
        server,
        "POST",
        "/api/export?format=csv",
        json.dumps({"results": [record]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200
    row = text.decode().splitlines()[1]
    assert row.startswith("'@SUM(A1)") and f"'{formula}".replace('"', '""') in row


def test_a_client_hanging_up_is_logged_as_such(server):
    body, kind = multipart([("scan.png", b"\0" * 200_000)])
    with socket.create_connection((server.host, server.port), timeout=30) as connection:
        head = (
            f"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        connection.sendall(head + body[:1000])
    deadline = time.monotonic() + 30
    while "hung up" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert "the client hung up before its answer" in server.log()
    assert "internal error" not in server.log()


# --- slow bodies -------------------------------------------------------------------------------


@pytest.fixture
def fresh_server(tmp_path):
    running = start_server(tmp_path / "tmp", "--quiet")
    yield running
    running.stop()


def _trickle(server, stop: threading.Event, answers: list) -> None:
    """A client that sends its headers, then one byte of its body every 5 s until answered."""
    body, kind = multipart([("slow.png", b"\0" * 10_000)])
    with socket.create_connection((server.host, server.port), timeout=120) as connection:
        connection.sendall(
            (
                f"POST /api/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
        )
        for byte in body:
            answered, _, _ = select.select([connection], [], [], 5)  # the client's pace
            if answered:
                answers.append(connection.recv(4096).split(b"\r\n", 1)[0])
                return
            if stop.is_set():
                return
            try:
                connection.sendall(bytes([byte]))
            except OSError:  # closed after its answer: read it
                answers.append(connection.recv(4096).split(b"\r\n", 1)[0])
                return


@pytest.mark.slow
def test_trickling_clients_do_not_keep_an_upload_waiting(fresh_server):
    """16 clients (the queue's size) trickle a byte every 5 s: each is cut off with 408 once it
    falls behind serve.min_body_kb_per_s after serve.body_timeout_s (10 s), and a normal upload
    sent after them is answered within 30 s (before the cut-off it waited 300 s for a 503)."""
    stop = threading.Event()
    answers: list[bytes] = []
    clients = [
        threading.Thread(target=_trickle, args=(fresh_server, stop, answers), daemon=True)
        for _ in range(16)
    ]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 30
    while json.loads(request(fresh_server, "GET", "/api/health")[2])["queue"]["admitted"] < 16:
        assert time.monotonic() < deadline, "the trickling clients were never admitted"
        time.sleep(0.05)
    started = time.monotonic()
    status, answer = classify(fresh_server, [(p.name, p.read_bytes()) for p in sample_images()[:1]])
    waited = time.monotonic() - started
    stop.set()
    for client in clients:
        client.join(30)
    assert status == 200, answer
    assert waited < 30, f"the upload waited {waited:.0f} s"
    assert answers and all(b" 408 " in line for line in answers), answers


# --- memory ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_rgb_jpeg(tmp_path_factory) -> Path:
    return write_large_rgb_jpeg(tmp_path_factory.mktemp("large") / "large.jpg")


@pytest.mark.slow
def test_a_request_of_large_images_peaks_at_one_decoded_image(fresh_server, large_rgb_jpeg):
    """Four ~99 Mpx RGB images in one request: each is decoded, preprocessed and reduced to the
    page's preview before the next is decoded. Peak under 1 GB (it was 1.8 GB: every full-size
    image of the request was kept until the answer)."""
    data = large_rgb_jpeg.read_bytes()
    status, answer = classify(fresh_server, [(f"large{i}.jpg", data) for i in range(4)])
    assert status in (200, 422), answer
    assert len(answer["results"]) == 4 and not any(
        r["error"] and "not classified" not in r["error"] for r in answer["results"]
    )
    peak_mb = fresh_server.peak_rss_kib() / 1024
    assert peak_mb < 1024, f"peak {peak_mb:.0f} MB"


def test_an_upload_without_a_file_name_is_shown_as_upload_n(server):
    """A name that is no file name (".", "..", blank) is never shown as the server's
    own spool name (it was 0000): it becomes upload-N, its place in the request."""
    data = sample_images()[0].read_bytes()
    status, answer = classify(server, [(".", data), ("..", data), ("  ", data)])
    assert status == 200, answer
    names = [r["image_name"] for r in answer["results"]]
    assert names == ["upload-1", "upload-2", "upload-3"]
    assert all("0000" not in r["display_name"] for r in answer["results"])


def test_inference_settings_apply_to_the_server_as_to_btxrd_run(tmp_path):
    """One function builds the classifier from the settings for both commands: the config's
    inference.fast_decode reaches the server (its own copy of that code dropped it)."""
    config = tmp_path / "fast.yaml"
    config.write_text("inference:\n  fast_decode: true\n", encoding="utf-8")
    running = start_server(tmp_path / "tmp", "--quiet", "--config", str(config))
    # Large enough for a 1/2 DCT scale to stay above twice the model's input.
    jpeg = tmp_path / "large.jpg"
    Image.open(sample_images()[0]).convert("L").resize((2000, 2000)).save(jpeg, quality=90)
    try:
        status, answer = classify(running, [(jpeg.name, jpeg.read_bytes())])
    finally:
        running.stop()
    assert status in (200, 422), answer
    assert answer["results"][0]["decode"].startswith("jpeg-draft-1/")


def test_the_page_is_offered_the_formats_this_install_reads(server):
    formats = json.loads(request(server, "GET", "/api/health")[2])["formats"]
    assert formats["JPEG"] == [".jpg", ".jpeg"] and formats["PNG"] == [".png"]
    assert ("DICOM" in formats) == (importlib.util.find_spec("pydicom") is not None)


def test_without_pydicom_the_page_is_not_offered_dicom(tmp_path):
    """A ``[serve]``-only install (pydicom absent, as Python sees it): no DICOM in the list."""
    without_pydicom = [
        sys.executable,
        "-c",
        "import sys; sys.modules['pydicom'] = None\n"
        "from btxrd.runtime.serve.cli import main; main(prog_name='btxrd-serve')",
    ]
    running = start_server(tmp_path / "tmp", "--quiet", program=without_pydicom)
    try:
        formats = json.loads(request(running, "GET", "/api/health")[2])["formats"]
    finally:
        running.stop()
    assert "DICOM" not in formats and list(formats) == ["JPEG", "PNG", "TIFF", "BMP"]


def test_names_that_are_not_utf8_are_escaped_and_flagged_not_mojibake(server):
    """A client (curl, a script) may send a file name's raw bytes. 0xff must not come back as
    the Latin-1 character ÿ, and must not look like a name that holds the text \\xff."""
    data = sample_images()[0].read_bytes()
    boundary = "b0undary"
    parts = []
    for name in (b"scan-\xff.png", b"scan-\\xff.png"):
        parts.append(
            b"--" + boundary.encode() + b'\r\nContent-Disposition: form-data; name="files"; '
            b'filename="' + name + b'"\r\nContent-Type: image/jpeg\r\n\r\n' + data + b"\r\n"
        )
    body = b"".join(parts) + b"--" + boundary.encode() + b"--\r\n"
    kind = f"multipart/form-data; boundary={boundary}"
    status, _, answer = request(server, "POST", "/api/classify", body, {"Content-Type": kind})
    assert status == 200, answer
    byte, text = json.loads(answer)["results"]
    assert "ÿ" not in byte["path"] and byte["path_escaped"] is True
    assert text["path"] == "scan-\\xff.png" and text["path_escaped"] is False
    assert name_bytes(byte["path"], True) == b"scan-\xff.png"
    assert (byte["path"], byte["path_escaped"]) != (text["path"], text["path_escaped"])
