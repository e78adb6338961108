"""``btxrd-serve`` as a command: help, the warning off loopback, a busy port, a missing extra,
and the server's modules kept apart from the rest of the runtime."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner
from serve_support import REPO_ROOT, SERVE, request, start_server

from btxrd.runtime.install import install_hint
from btxrd.runtime.serve.cli import is_loopback, main

WEB = ("starlette", "uvicorn", "multipart", "python_multipart")


def test_help_has_an_example_and_the_exit_codes():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Example:" in text and "btxrd-serve --port 8080" in text
    assert "Exit codes:" in text and "not for clinical use" in text


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.168.1.4", False),
        ("::", False),
    ],
)
def test_loopback_is_told_apart(host, loopback):
    assert is_loopback(host) is loopback


def test_binding_beyond_loopback_warns_that_there_is_no_authentication(tmp_path):
    pytest.importorskip("starlette")
    server = start_server(tmp_path / "tmp", "--host", "0.0.0.0")
    try:
        warning = next(line for line in server.stderr if "warning" in line)
        assert "no authentication" in warning and "0.0.0.0" in warning
        # Reached under another name, the page answers (the Host check is for loopback).
        status, _, _ = request(server, "GET", "/api/health", headers={"Host": "ward-pc:8000"})
        assert status == 200
    finally:
        server.stop()


def test_a_busy_port_is_one_line_and_exit_2():
    pytest.importorskip("starlette")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*SERVE, "--port", str(port)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"btxrd-serve: error: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "choose another --port"
    ]


def test_without_the_extra_it_says_how_to_install_it():
    code = (
        "import sys\n"
        "for name in ('starlette', 'uvicorn', 'multipart'):\n"
        "    sys.modules[name] = None\n"
        "from btxrd.runtime.serve.cli import main\n"
        "main(['--port', '0'], prog_name='btxrd-serve')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=60
    )
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "btxrd-serve: error: the web page needs the [serve] extra (starlette, uvicorn, multipart "
        f"missing); install it with {install_hint('serve')}"
    ]


def test_version_names_the_web_stack():
    pytest.importorskip("starlette")
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "starlette " in result.output and "uvicorn " in result.output
    assert "btxrd-demo.onnx (sha256 " in result.output


def test_no_runtime_module_outside_the_server_imports_the_web_stack():
    """The web libraries belong to the [serve] extra: btxrd-run and the library never load them,
    and the serve command loads them only when it serves."""
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import btxrd.runtime\n"
        "for info in pkgutil.walk_packages(btxrd.runtime.__path__, 'btxrd.runtime.'):\n"
        "    if info.name != 'btxrd.runtime.serve.app':\n"
        "        try:\n"
        "            importlib.import_module(info.name)\n"
        "        except ImportError:\n"
        "            pass  # a module of another optional extra; test_isolation covers those\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {WEB!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
