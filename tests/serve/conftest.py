"""Fixtures of the server tests: one real ``btxrd-serve`` (the shipped demo model) per module."""

from __future__ import annotations

import pytest
from serve_support import RunningServer, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    running: RunningServer = start_server(tmp_path_factory.mktemp("serve") / "tmp", "--quiet")
    yield running
    running.stop()
