"""The installed btxrd: its version, and the install command for an extra as it works for it.

``pip install 'btxrd[parquet]'`` works only where btxrd came from an index. Installed from a
source folder (the README's route) or from a wheel file, pip records where it came from
(``direct_url.json``, PEP 610), and the hint names that folder or file instead.
"""

from __future__ import annotations

import json
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

DISTRIBUTION = "btxrd"


def btxrd_version() -> str:
    """The installed btxrd's version, or "unknown" when it runs uninstalled."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


def install_hint(extra: str) -> str:
    """``pip install ...`` that adds ``extra`` to this btxrd, e.g. ``pip install 'btxrd[ray]'``,
    ``pip install '/src/btxrd[ray]'`` or ``pip install -e '/src/btxrd[ray]'``."""
    return hint_for(_direct_url(), extra)


def hint_for(direct_url: dict[str, Any] | None, extra: str) -> str:
    """The hint for a btxrd installed from ``direct_url`` (None: from an index)."""
    from_index = f"pip install {shlex.quote(f'{DISTRIBUTION}[{extra}]')}"
    origin = direct_url or {}
    url = origin.get("url")
    if not isinstance(url, str):
        return from_index
    parsed = urlparse(url)
    if parsed.scheme != "file":
        vcs = origin.get("vcs_info")
        if isinstance(vcs, dict):
            url = f"{vcs.get('vcs', 'git')}+{url}"
        return f"pip install {shlex.quote(f'{DISTRIBUTION}[{extra}] @ {url}')}"
    source = Path(unquote(parsed.path))
    dir_info = origin.get("dir_info")
    editable = isinstance(dir_info, dict) and dir_info.get("editable") is True
    command = f"pip install {'-e ' if editable else ''}{shlex.quote(f'{source}[{extra}]')}"
    if source.exists():
        return command
    # The folder or wheel it came from is gone: both forms, so one of them works.
    return f"{command} (from the btxrd source it was installed from) or {from_index}"


def _direct_url() -> dict[str, Any] | None:
    # Only an installed distribution has a RECORD; a build's btxrd.egg-info left in the working
    # folder (found first when that folder is on sys.path) has none and says nothing of origin.
    installed = [d for d in metadata.distributions(name=DISTRIBUTION) if d.read_text("RECORD")]
    text = installed[0].read_text("direct_url.json") if installed else None
    if not text:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None
