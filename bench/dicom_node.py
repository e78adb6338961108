"""The DICOM node's throughput against btxrd-run's on the same files, in the same run.

N DX radiographs (copies of the shipped samples, each its own study) are classified three times:
by ``btxrd-run --dir`` and by ``btxrd-run --dir --cam`` (which draws the overlays the node
draws; each run's own figure of classification time, the model load excluded), and by
``btxrd-serve dicom`` already running, sent in one association by dcmtk's storescu, timed from
the first byte sent to the last report and overlay stored by the destination (dcmtk's storescp
as the PACS). The node does more per image (receive to disk, write the SR and the Secondary
Capture, send both), which is what the 1.5x target allows for. Also the node's peak memory.
Prints a table, writes ``bench/dicom_node.json``.

    .venv/bin/python bench/dicom_node.py [--copies 5] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO / "tests" / "node"))
from machine import describe  # noqa: E402
from node_support import (  # noqa: E402
    NODE_AE,
    PACS_AE,
    SAMPLES,
    dx_from_picture,
    free_port,
    needs,
    node,
    wait_for,
)

TARGET_RATIO = 1.5  # the node may take at most 1.5 x btxrd-run's time per image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=5, help="copies of the 6 samples")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each timing")
    parser.add_argument("--out", type=Path, default=BENCH / "dicom_node.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="btxrd-bench-node-") as scratch:
        work = Path(scratch)
        images = _radiographs(work / "dx", args.copies)
        count = len(list(images.iterdir()))
        run_seconds = [_btxrd_run(images) for _ in range(args.reps)]
        cam_seconds = [
            _btxrd_run(images, "--cam", "--cam-dir", str(work / "cams")) for _ in range(args.reps)
        ]
        node_seconds, peak_mb = _through_the_node(work, images, args.reps)
    run_per_image = statistics.median(run_seconds) / count
    cam_per_image = statistics.median(cam_seconds) / count
    node_per_image = statistics.median(node_seconds) / count
    results = {
        "command": "python bench/dicom_node.py " + " ".join(sys.argv[1:]),
        "machine": describe(),
        "images": count,
        "btxrd_run_seconds": run_seconds,
        "btxrd_run_cam_seconds": cam_seconds,
        "node_seconds": node_seconds,
        "btxrd_run_images_per_s": round(1 / run_per_image, 2),
        "btxrd_run_cam_images_per_s": round(1 / cam_per_image, 2),
        "node_images_per_s": round(1 / node_per_image, 2),
        "ratio": round(node_per_image / run_per_image, 2),
        "ratio_to_cam": round(node_per_image / cam_per_image, 2),
        "target_ratio": TARGET_RATIO,
        "node_peak_rss_mb": peak_mb,
    }
    print(f"{'images':<28}{count}")
    print(f"{'btxrd-run (images/s)':<28}{results['btxrd_run_images_per_s']}")
    print(f"{'btxrd-run --cam (images/s)':<28}{results['btxrd_run_cam_images_per_s']}")
    print(f"{'through the node (images/s)':<28}{results['node_images_per_s']}")
    print(f"{'node / btxrd-run time':<28}{results['ratio']} (target <= {TARGET_RATIO})")
    print(f"{'node / btxrd-run --cam time':<28}{results['ratio_to_cam']}")
    print(f"{'node peak memory (MB)':<28}{peak_mb}")
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def _radiographs(folder: Path, copies: int) -> Path:
    folder.mkdir(parents=True)
    samples = sorted(SAMPLES.glob("IMG*"))
    for copy in range(copies):
        for sample in samples:
            dx_from_picture(sample, folder / f"{sample.stem}-{copy}.dcm")
    return folder


def _btxrd_run(images: Path, *flags: str) -> float:
    """btxrd-run's own classification time for the folder (its model load excluded)."""
    command = [
        str(Path(sys.executable).parent / "btxrd-run"),
        "--dir",
        str(images),
        "--json",
        "-q",
        *flags,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return json.loads(done.stdout)["summary"]["wall_seconds"]


def _through_the_node(work: Path, images: Path, reps: int) -> tuple[list[float], float]:
    storescp = needs("storescp")
    storescu = needs("storescu")
    seconds = []
    port = free_port()
    received = work / "pacs"
    received.mkdir()
    # Unique file names: each repetition resends the same objects (same UIDs), all counted.
    pacs = subprocess.Popen([storescp, "+uf", "-od", str(received), "-aet", PACS_AE, str(port)])
    try:
        with node(work / "outbox", f"{PACS_AE}@127.0.0.1:{port}", "--quiet") as running:
            for rep in range(reps):
                before = len(list(received.iterdir()))
                expected = before + 2 * len(list(images.iterdir()))  # a report and an overlay
                started = time.perf_counter()
                subprocess.run(
                    [
                        storescu,
                        "-aet",
                        PACS_AE,
                        "-aec",
                        NODE_AE,
                        "+sd",
                        "127.0.0.1",
                        str(running.port),
                        str(images),
                    ],
                    check=True,
                    capture_output=True,
                )
                wait_for(
                    lambda expected=expected: len(list(received.iterdir())) >= expected,
                    f"rep {rep}: every result at the PACS",
                    seconds=600,
                )
                seconds.append(round(time.perf_counter() - started, 3))
            peak = _peak_rss_mb(running.process.pid)
    finally:
        pacs.terminate()
        pacs.wait(30)
    return seconds, peak


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
