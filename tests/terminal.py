"""Run a command with stderr (and optionally stdout) on a pseudo-terminal, as in an interactive
shell: what progress bars and tables look like to a user."""

from __future__ import annotations

import os
import pty
import subprocess
from collections.abc import Mapping, Sequence


def through_a_terminal(
    command: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout_too: bool = False,
    timeout: float = 120,
) -> tuple[int, str, str]:
    """The exit code, stdout as piped (empty with ``stdout_too``) and all the terminal got."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        list(command),
        stdout=terminal if stdout_too else subprocess.PIPE,
        stderr=terminal,
        env=None if env is None else dict(env),
    )
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout, _ = process.communicate(timeout=timeout)
    os.close(controller)
    piped = stdout.decode() if stdout is not None else ""
    return process.returncode, piped, b"".join(chunks).decode(errors="replace")
