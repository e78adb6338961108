"""Peak memory of decoding small files that declare large images, before and after the decode
hardening of 2026-11-30.

Each case is decoded with ``btxrd.runtime.decode.image.load_image`` in a fresh Python process, and
that process reports its own peak RSS (``VmHWM`` from ``/proc/self/status``; ``ru_maxrss`` where
there is no /proc). The same process first decodes a small image, so the figure "above
baseline" is what the case itself costs beyond the imports.

- ``deflated-dicom-bomb``: 220 KB of deflated zeros declaring 10630 x 10630 16-bit pixels
  (over the 100 M pixel limit: refused).
- ``deflated-dicom-9900``: 9900 x 9900 16-bit deflated DICOM of zeros (under the limit; decoded,
  then refused as blank).
- ``png-16bit-9900``: a 9900 x 9900 16-bit PNG of a few MB (under the limit; decoded).
- ``png-bomb-header``: a PNG header claiming 40000 x 40000 pixels (refused from the header).
- ``checkpoint-zip-bomb``: a real torch checkpoint whose one tensor entry is 2 GiB of zeros
  deflated to about 2 MB, loaded with ``btxrd.export.checkpoint.load_checkpoint`` (its baseline
  is the same checkpoint before the swap, so torch's own imports are not counted).

"Before" runs the code of another commit through a git worktree and a ``PYTHONPATH`` shim (a
``btxrd`` folder without ``__init__.py`` whose ``runtime``, ``export`` and ``explain`` link into
the worktree), so that commit's modules import first; the worktree is removed afterwards.

Example:
    .venv/bin/python bench/decode_memory.py --before f633f7e
    .venv/bin/python bench/decode_memory.py --only png-16bit-9900
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
from PIL import Image

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests"))  # the DICOM writers of the tests

# VmHWM is the peak RSS of this process image only; ru_maxrss would also count the parent's
# memory at the fork that started it (Linux carries it across exec).
_CHILD = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
from btxrd.runtime.errors import InputError
from btxrd.runtime.decode.image import load_image
import btxrd.runtime.decode.image as imageio

def peak_kib():
    try:
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

small = sys.argv[2]
if sys.argv[1].endswith(".pt"):
    from btxrd.export.checkpoint import load_checkpoint
    from btxrd.runtime.errors import BtxrdError
    load_checkpoint(small)
    base = peak_kib()
    start = time.perf_counter()
    try:
        load_checkpoint(sys.argv[1])
        outcome = "loaded"
    except BtxrdError as exc:
        outcome = "refused: " + str(exc).split(": ", 1)[1][:70]
else:
    load_image(small)
    base = peak_kib()
    start = time.perf_counter()
    try:
        decoded = load_image(sys.argv[1])
        outcome = "decoded %d x %d" % decoded.image.size
    except InputError as exc:
        outcome = "refused: " + str(exc).split(": ", 1)[1][:70]
seconds = time.perf_counter() - start
print(json.dumps({"peak_kib": peak_kib(), "base_kib": base, "seconds": seconds,
                  "outcome": outcome, "code": imageio.__file__}))
"""


def _png_bomb(path: Path) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _png_16bit(path: Path) -> None:
    side = 9900
    row = (np.arange(side, dtype=np.uint32) * 4095 // (side - 1)).astype(np.uint16)
    values = np.empty((side, side), np.uint16)
    for start in range(0, side, 1000):  # a ramp with a band pattern, without a float copy
        values[start : start + 1000] = row
        values[start : start + 1000, ::97] = 4095 - row[::97]
    Image.fromarray(values).save(path, compress_level=9)


def _deflated(rows: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        from dicom_files import write_deflated_zeros

        write_deflated_zeros(path, rows, rows)

    return make


def small_checkpoint(path: Path) -> None:
    """A btxrd checkpoint of one tiny tensor (torch imported here only: the bench's own venv)."""
    import torch

    torch.save(
        {
            "model_state_dict": {"w": torch.zeros(4)},
            "class_names": ["Normal", "Benign", "Malignant"],
            "config": {"arch": "resnet18", "image_size": 64},
        },
        path,
    )


def _checkpoint_bomb(path: Path) -> None:
    import zipfile

    small = path.with_name("small.pt")
    small_checkpoint(small)
    with zipfile.ZipFile(small) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if not info.filename.endswith("/data/0"):
                archive.writestr(info, data)
                continue
            swapped = zipfile.ZipInfo(info.filename)
            swapped.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(swapped, "w", force_zip64=True) as handle:
                for _ in range(2048):  # 2 GiB of zeros, streamed
                    handle.write(bytes(1024**2))


CASES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "deflated-dicom-bomb": ("bomb.dcm", _deflated(10630)),
    "deflated-dicom-9900": ("deflated.dcm", _deflated(9900)),
    "png-16bit-9900": ("big16.png", _png_16bit),
    "png-bomb-header": ("bomb.png", _png_bomb),
    "checkpoint-zip-bomb": ("bomb.pt", _checkpoint_bomb),
}


def _measure(case: Path, small: Path, pythonpath: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(case), str(small)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:160]}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "peak_mb": round(result["peak_kib"] / 1024, 1),
        "above_baseline_mb": round((result["peak_kib"] - result["base_kib"]) / 1024, 1),
        "seconds": round(result["seconds"], 2),
        "outcome": result["outcome"],
        "code": result["code"],
    }


def _shim(before: str, work: Path) -> tuple[Path, str]:
    """A worktree of ``before`` and a package folder importing btxrd.* from it."""
    tree = work / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), before],
        check=True,
        capture_output=True,
    )
    package = work / "oldpkg" / "btxrd"
    package.mkdir(parents=True)
    for name in ("runtime", "export", "explain"):
        (package / name).symlink_to(tree / name)
    return tree, str(package.parent)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--before", metavar="REV", help="Also measure this commit's code (e.g. f633f7e).")
@click.option("--only", multiple=True, type=click.Choice(list(CASES)), help="Measure only these.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=BENCH / "decode_memory.json",
    show_default=True,
)
def main(before: str | None, only: tuple[str, ...], out: Path) -> None:
    """Peak RSS of decoding each worst case in a fresh process; a table on stdout, JSON to --out.

    Example:
        .venv/bin/python bench/decode_memory.py --before f633f7e
    """
    names = list(only or CASES)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="btxrd-decode-memory-") as scratch:
        work = Path(scratch)
        small = work / "small.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8)).save(small)
        tree, shim = _shim(before, work) if before else (None, None)
        try:
            for name in names:
                filename, make = CASES[name]
                path = work / filename
                click.echo(f"decode-memory: {name} ...", err=True)
                make(path)
                baseline = work / "small.pt" if path.suffix == ".pt" else small
                results[name] = {"file_kb": round(path.stat().st_size / 1024, 1)}
                if shim:
                    results[name]["before"] = _measure(path, baseline, shim)
                results[name]["after"] = _measure(path, baseline, None)
                path.unlink()
        finally:
            if tree is not None:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
    document = {"before": before, "python": sys.version.split()[0], "cases": results}
    out.write_text(json.dumps(document, indent=2) + "\n")
    _table(results, before)
    click.echo(f"decode-memory: wrote {out}", err=True)


def _table(results: dict[str, dict], before: str | None) -> None:
    header = f"{'case':<22} {'file':>9}  {'run':<15} {'peak RSS':>9} {'above base':>10}  outcome"
    click.echo(header)
    click.echo("-" * len(header))
    for name, figures in results.items():
        for label in ("before", "after"):
            if label not in figures:
                continue
            got = figures[label]
            run = f"{label} ({before})" if label == "before" else "after"
            if "error" in got:
                click.echo(f"{name:<22} {figures['file_kb']:>7.0f}KB  {run:<15} {got['error']}")
                continue
            click.echo(
                f"{name:<22} {figures['file_kb']:>7.0f}KB  {run:<15} {got['peak_mb']:>7.0f}MB "
                f"{got['above_baseline_mb']:>8.0f}MB  {got['outcome']}"
            )


if __name__ == "__main__":
    main()
