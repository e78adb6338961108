"""A real ``btxrd-run`` process stopped at a breakpoint: the named function runs, then the
process stops itself (SIGSTOP), so a test acts at that exact point (a second run, a signal) with
no sleep deciding the order. Used by the reliability and the engine tests."""

from __future__ import annotations

import os
import subprocess
import sys

# A breakpoint in a real btxrd-run process: the named function runs, then the process stops
# itself (SIGSTOP) once, so a test can act at that exact point, with no sleep deciding it.
_BREAKPOINT = """
import importlib, os, signal, sys
module_name, attribute = sys.argv[1], sys.argv[2]
owner = importlib.import_module(module_name)
*parents, name = attribute.split(".")
for parent in parents:
    owner = getattr(owner, parent)
real = getattr(owner, name)
hit = []
def stop_after(*args, **kwargs):
    result = real(*args, **kwargs)
    if not hit:
        hit.append(True)
        os.kill(os.getpid(), signal.SIGSTOP)
    return result
setattr(owner, name, stop_after)
from btxrd.runtime.cli.run import main
main(sys.argv[3:])
"""


class StoppedRun:
    """``btxrd-run ARGS`` stopped right after ``module.attribute`` first returned."""

    def __init__(self, module: str, attribute: str, *args: object) -> None:
        import signal as _signal

        env = {k: v for k, v in os.environ.items() if k not in ("BTXRD_MODEL", "BTXRD_CONFIG")}
        command = [sys.executable, "-c", _BREAKPOINT, module, attribute, *map(str, args)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        _, status = os.waitpid(self.process.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            self.process.returncode = os.waitstatus_to_exitcode(status)
            raise AssertionError(
                f"never reached {module}.{attribute}: {self.process.stderr.read().decode()}"
            )
        self._signal = _signal

    @property
    def pid(self) -> int:
        return self.process.pid

    def resume(self) -> subprocess.CompletedProcess:
        """Let it go on to its end."""
        os.kill(self.pid, self._signal.SIGCONT)
        stdout, stderr = self.process.communicate(timeout=300)
        return subprocess.CompletedProcess(
            self.process.args, self.process.returncode, stdout, stderr
        )

    def kill(self) -> None:
        """SIGKILL it where it stands (the kernel releases what it held)."""
        os.kill(self.pid, self._signal.SIGKILL)
        self.process.communicate(timeout=60)
