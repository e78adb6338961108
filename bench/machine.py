"""What the figures were measured on: CPU, cores, memory, load, library versions."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

_PACKAGES = (
    "btxrd",
    "numpy",
    "onnxruntime",
    "onnx",
    "pillow",
    "torch",
    "torchvision",
    "grad-cam",
    "click",
)
_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def describe() -> dict[str, Any]:
    """One JSON-ready description of this machine and the libraries the figures came from."""
    cpu = _cpuinfo()
    return {
        "cpu_model": cpu.get("model name", platform.processor() or "unknown"),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_flags": [f for f in _FLAGS if f in cpu.get("flags", "").split()],
        "memory_gb": _mem_total_gb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "numpy_blas": _numpy_blas(),
        "hyperfine": _hyperfine_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key and key not in info:
            info[key] = value.strip()
    return info


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _numpy_blas() -> str | None:
    try:
        import numpy as np

        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:  # best effort: the layout of show_config changes between numpy versions
        return None


def _hyperfine_version() -> str | None:
    try:
        out = subprocess.run(["hyperfine", "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()
