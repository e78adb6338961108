"""Fixtures of the reliability matrix; its helpers live in ``reliability_support``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def good_images(phantom_images) -> tuple[Path, Path]:
    return phantom_images["gray_jpeg"], phantom_images["gray16_png"]
