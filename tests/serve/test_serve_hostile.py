"""Hostile and broken input over HTTP: every bad file of the reliability catalogue gets the CLI's
record and message with a 4xx, bad requests get one line, nothing is a 500 or a traceback, and
nothing is left in the server's temporary folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from serve_support import (
    REPO_ROOT,
    classify,
    cli_json,
    leftovers,
    multipart,
    request,
    sample_images,
    start_server,
)

pytest.importorskip("starlette")

sys.path.insert(0, str(REPO_ROOT / "tests" / "reliability"))
from test_images import BAD

# An upload is bytes: a symbolic link cannot be sent, so that case has no HTTP form.
CASES = [case for case in BAD if case[0] != "broken-symlink"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> dict[str, tuple[Path, dict] | str]:
    """Each case's file and its ``btxrd-run --json`` record (one CLI run for all), or the reason
    the case cannot be made here."""
    folder = tmp_path_factory.mktemp("bad")
    made: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for case_id, name, make, _ in CASES:
        path = folder / case_id / name
        path.parent.mkdir()
        try:
            make(path)
        except pytest.skip.Exception as reason:
            skipped[case_id] = str(reason)
            continue
        made[case_id] = path
    document = cli_json(*made.values())
    records = dict(zip(made, document["results"], strict=True))
    return {**{k: (made[k], records[k]) for k in made}, **skipped}


@pytest.mark.parametrize(
    ("case_id", "cause"), [(c[0], c[3]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_file_gets_the_cli_record_and_a_4xx(server, catalogue, case_id, cause):
    entry = catalogue[case_id]
    if isinstance(entry, str):
        pytest.skip(entry)
    path, cli = entry
    status, served = classify(server, [(path.name, path.read_bytes())])
    assert status == 422, served
    (record,) = served["results"]
    assert record["prediction"] is None and record["scores"] == cli["scores"] == {}
    assert record["error"] == cli["error"].replace(str(path), path.name)
    assert cause in record["error"]
    assert served["errors"] == [f"error: {record['error']}"]
    assert "\n" not in record["error"] and "Traceback" not in server.log()
    assert leftovers(server) == []


def test_a_bad_file_beside_good_ones_spoils_nothing(server):
    good = sample_images()[:2]
    files = [
        (good[0].name, good[0].read_bytes()),
        ("notes.png", b"patient list\n"),
        (good[1].name, good[1].read_bytes()),
    ]
    status, served = classify(server, files)
    assert status == 422
    assert [r["prediction"] is not None for r in served["results"]] == [True, False, True]
    assert served["views"][1] is None and served["views"][0]["film"]


@pytest.mark.parametrize(
    ("body", "headers", "status", "needle"),
    [
        (b"{}", {"Content-Type": "application/json"}, 415, "multipart/form-data"),
        (b"x", {}, 415, "multipart/form-data"),
        (
            b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--b--\r\n',
            {"Content-Type": "multipart/form-data; boundary=b"},
            400,
            "no file",
        ),
        (
            b"garbage without a boundary",
            {"Content-Type": "multipart/form-data; boundary=zz"},
            400,
            "",
        ),
        (b"", {"Content-Type": "multipart/form-data"}, 400, "upload refused"),
    ],
    ids=["json", "no-content-type", "no-file", "garbage", "no-boundary"],
)
def test_bad_requests_get_one_line(server, body, headers, status, needle):
    answer_status, answer_headers, answer = request(server, "POST", "/api/classify", body, headers)
    assert answer_status == status, answer
    assert answer_headers["content-type"] == "application/json"
    message = json.loads(answer)["error"]
    assert needle in message and "\n" not in message


def test_too_many_files_are_refused(server):
    tiny = [(f"{i}.png", b"x") for i in range(65)]
    body, kind = multipart(tiny)
    status, _, answer = request(server, "POST", "/api/classify", body, {"Content-Type": kind})
    assert status == 400
    assert "Too many files" in json.loads(answer)["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/nothing", 404),
        ("GET", "/api/results/AAAAAAAAAAAAAAAA/film.png", 404),
        ("GET", "/api/results/..%2F..%2Fetc/film.png", 404),
        ("GET", "/api/results/AAAAAAAAAAAAAAAA/heatmap/..%2Fx.png", 404),
        ("GET", "/../../etc/passwd", 404),
        ("DELETE", "/api/classify", 405),
        ("GET", "/api/classify", 405),
    ],
)
def test_unknown_routes_and_ids_are_one_line_4xx(server, method, path, status):
    answer_status, _, answer = request(server, method, path)
    assert answer_status == status
    if path.startswith("/api/"):
        assert "\n" not in json.loads(answer)["error"]


def test_export_refuses_what_is_not_records(server):
    headers = {"Content-Type": "application/json"}
    for body in (b"not json", b"[]", b'{"results": [1, 2]}', b'{"results": [{"x": 1}]}'):
        for fmt in ("json", "csv"):
            status, _, answer = request(server, "POST", f"/api/export?format={fmt}", body, headers)
            assert status == 400, (body, fmt)
            assert "results document" in json.loads(answer)["error"]
    status, _, _ = request(server, "POST", "/api/export?format=xml", b"{}", headers)
    assert status == 400


def test_another_host_name_is_refused(server):
    """A page elsewhere that rebinds its own name to 127.0.0.1 reaches a loopback server with
    its Host header: refused."""
    status, _, _ = request(server, "GET", "/api/health", headers={"Host": "attacker.example"})
    assert status == 400
    status, _, _ = request(server, "GET", "/api/health", headers={"Host": "localhost"})
    assert status == 200


def test_nothing_was_a_500_or_a_traceback(server):
    assert "Traceback" not in server.log()
    assert " 500 " not in server.log()
    assert leftovers(server) == []


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    config = folder / "serve.yaml"
    config.write_text("serve:\n  max_upload_mb: 1\n", encoding="utf-8")
    running = start_server(folder / "tmp", "--quiet", "--config", str(config))
    yield running
    running.stop()


def test_an_upload_over_the_limit_is_refused_before_it_is_read(small_server):
    body, kind = multipart([("big.png", b"\0" * (2 * 1024 * 1024))])
    status, _, answer = request(small_server, "POST", "/api/classify", body, {"Content-Type": kind})
    assert status == 413
    assert "exceeds the limit of 1 MB" in json.loads(answer)["error"]


def test_a_chunked_upload_over_the_limit_is_cut_off(small_server):
    """No Content-Length to check first: the body is counted as it arrives."""
    body, kind = multipart([("big.png", b"\0" * (2 * 1024 * 1024))])
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    headers = {"Content-Type": kind, "Transfer-Encoding": "chunked"}
    try:
        status, _, answer = request(small_server, "POST", "/api/classify", chunks, headers)
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server closed the connection without an answer")
    assert status == 413
    assert "exceeds the limit of 1 MB" in json.loads(answer)["error"]
    assert "Traceback" not in small_server.log()
    assert leftovers(small_server) == []
    ok, served = classify(small_server, [(p.name, p.read_bytes()) for p in sample_images()[:1]])
    assert ok == 200 and served["results"][0]["prediction"]
