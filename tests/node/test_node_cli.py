"""``btxrd-serve dicom`` as a command: one line and the right exit code for each thing a PACS
administrator can get wrong, and for a missing extra."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from btxrd.runtime.install import install_hint

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE = [str(Path(sys.executable).parent / "btxrd-serve"), "dicom"]


def _node(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*NODE, "--outbox", str(tmp_path / "outbox"), *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )


def test_without_the_extra_it_says_how_to_install_it(tmp_path):
    code = (
        "import sys\n"
        "for name in ('pynetdicom', 'highdicom', 'pydicom'):\n"
        "    sys.modules[name] = None\n"
        "from btxrd.runtime.serve.cli import main\n"
        "main(['dicom', '--destination', 'PACS@127.0.0.1:4242'], prog_name='btxrd-serve')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "btxrd-serve dicom: error: the DICOM node needs the [dicom-node] extra (pynetdicom, "
        f"highdicom, pydicom missing); install it with {install_hint('dicom-node')}"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "no --destination: give the PACS the results go to, as AE@HOST:PORT"),
        (
            ("--destination", "PACS:4242"),
            "--destination 'PACS:4242': expected AE@HOST:PORT, e.g. PACS@10.0.0.5:4242",
        ),
        (
            ("--destination", "PACS@127.0.0.1:4242", "--allow", "PACS"),
            "--allow 'PACS': expected AE@HOST, e.g. PACS@10.0.0.5",
        ),
        (
            ("--destination", "PACS@127.0.0.1:4242", "--ae-title", "A_TITLE_LONGER_THAN_16"),
            "AE title 'A_TITLE_LONGER_THAN_16': 1 to 16 characters, no backslash",
        ),
    ],
    ids=["no-destination", "bad-destination", "bad-allow", "long-ae-title"],
)
def test_a_configuration_mistake_is_one_line_and_exit_2(tmp_path, args, message):
    pytest.importorskip("pynetdicom")
    done = _node(*args, tmp_path=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [f"btxrd-serve dicom: error: {message}"]


def test_a_busy_port_is_one_line_and_exit_2(tmp_path):
    pytest.importorskip("pynetdicom")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _node("--destination", "PACS@127.0.0.1:4242", "--port", str(port), tmp_path=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"btxrd-serve dicom: error: cannot listen on 127.0.0.1:{port} (")
    )
