"""7. The Ray engine on a two-node cluster on this machine vs the local engine, same inputs.

A head node and one worker node (one CPU each, ``ray.cluster_utils.Cluster``, as the tests
start them) stand for two machines; ``btxrd-run --parquet --engine ray --ray-address`` joins
the cluster as a separate driver and ``btxrd-run --parquet --engine local`` runs beside it
(the cluster's own processes idle in the background of both). Interleaved whole-process runs
on 2,000 of the large JPEGs (the folder section's 200, each 10 times, as hard links).

Figures: each engine's wall time and images/s per core (the local engine owns both cores; the
cluster has one CPU per node), Ray's overhead over the local engine (bar <= 20 %), start-up
(cluster start; each engine's whole run on 2 images: process, Ray connection, workers, model
sessions), the rate without start-up ((images - 2) / (wall - start-up)) and what a million
images costs in core-hours at that rate, and the rows of both runs compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from context import Context
from report import row
from timing import Stats, ratio

IMAGES, QUICK_IMAGES = 2000, 40
DISTINCT = 200
REPS, QUICK_REPS = 3, 1
SHARD_SIZE, QUICK_SHARD_SIZE = 256, 10  # 256: the default (settings.ScaleSettings)
TARGET_OVERHEAD = 0.20
MILLION = 1_000_000


def run(ctx: Context) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from ray.cluster_utils import Cluster

    n = QUICK_IMAGES if ctx.quick else IMAGES
    reps = QUICK_REPS if ctx.quick else REPS
    shard = QUICK_SHARD_SIZE if ctx.quick else SHARD_SIZE
    large = ctx.inputs.large_jpegs(min(DISTINCT, n))
    folder = ctx.inputs.folder(f"ray-{n}", [large[i % len(large)] for i in range(n)])
    for path in large:  # into the page cache, as the folder section does
        path.read_bytes()
    work = ctx.work / "ray"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "config.yaml"
    config.write_text(f"scale:\n  shard_size: {shard}\n", encoding="utf-8")
    env = {**ctx.env(), "RAY_USAGE_STATS_ENABLED": "0"}

    started = time.perf_counter()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    cluster_start = time.perf_counter() - started
    btxrd_run = str(ctx.venv_bin / "btxrd-run")  # the full environment: pyarrow and Ray
    base = [btxrd_run, "--model", str(ctx.model.onnx), "--dir", str(folder), "--config"]
    base += [str(config), "-q"]
    commands = {
        "local": [*base, "--engine", "local"],
        "ray": [*base, "--engine", "ray", "--ray-address", cluster.address],
    }
    tiny = ctx.inputs.folder("ray-2", large[:2])
    startup: dict[str, list[float]] = {name: [] for name in commands}
    walls: dict[str, list[float]] = {name: [] for name in commands}
    firsts: dict[str, list[float]] = {name: [] for name in commands}
    try:
        for r in range(reps):
            for name in _rotated(list(commands), r):
                out = work / f"{name}.parquet"
                shutil.rmtree(out, ignore_errors=True)
                wall, first = _timed([*commands[name], "--output", str(out)], out, env, ctx.repo)
                walls[name].append(wall)
                firsts[name].append(first)
                small = [c if c != str(folder) else str(tiny) for c in commands[name]]
                out = work / f"{name}-startup.parquet"
                shutil.rmtree(out, ignore_errors=True)
                startup[name].append(_timed([*small, "--output", str(out)], out, env, ctx.repo)[0])
    finally:
        cluster.shutdown()
    stats = {name: Stats(tuple(w)) for name, w in walls.items()}
    cores = os.cpu_count() or 1
    cluster_cpus = 2
    overhead = ratio(stats["ray"], stats["local"])
    overhead_pct = round((overhead["median"] - 1) * 100, 1)
    # Without start-up: the images beyond the 2-image run's over the time beyond it.
    after = {
        name: (n - 2) / max(1e-9, _median(walls[name]) - _median(startup[name]))
        for name in commands
    }
    per_core = {name: round(after[name] / (cores if name == "local" else cluster_cpus), 2)
                for name in commands}  # fmt: skip
    comparison = _compare(work / "local.parquet", work / "ray.parquet")
    figures: dict[str, Any] = {
        "images": n,
        "distinct_images": len(large),
        "shard_size": shard,
        "folder": str(folder),
        "cluster": {"nodes": 2, "cpus_per_node": 1, "start_seconds": round(cluster_start, 2)},
        "machine_cores": cores,
        "seconds": {name: s.to_json() for name, s in stats.items()},
        "images_per_s": {name: s.rate(n) for name, s in stats.items()},
        "images_per_s_per_core": {
            "local": round(n / stats["local"].median / cores, 2),
            "ray": round(n / stats["ray"].median / cluster_cpus, 2),
        },
        "first_part_seconds": {name: [round(f, 2) for f in fs] for name, fs in firsts.items()},
        "startup_seconds": {name: Stats(tuple(s)).to_json() for name, s in startup.items()},
        "images_per_s_without_startup": {name: round(v, 2) for name, v in after.items()},
        "images_per_s_per_core_without_startup": per_core,
        "ray_over_local": overhead,
        "ray_overhead_percent": overhead_pct,
        "core_hours_per_million": {
            name: round(MILLION / max(per_core[name], 1e-9) / 3600, 1) for name in commands
        },
        "rows_compared": comparison,
    }
    met = overhead_pct <= TARGET_OVERHEAD * 100
    rows = [
        row("local engine --parquet, 2 cores", stats["local"].rate(n), note=f"{n} large JPEGs"),
        row("ray engine, 2-node local cluster (1 CPU each)", stats["ray"].rate(n)),
        row(
            "ray overhead over the local engine",
            overhead_pct,
            unit="%",
            target=f"<= {TARGET_OVERHEAD * 100:g} %",
            met=met,
            note=f"median of {reps} interleaved runs each",
        ),
        row("ray cluster start (head + 1 worker node)", round(cluster_start, 2), unit="s"),
        row(
            "start-up (a 2-image run): local / ray",
            f"{_median(startup['local']):.1f} / {_median(startup['ray']):.1f}",
            unit="s",
            note=f"first part file of {shard} images after {_median(firsts['local']):.1f} / "
            f"{_median(firsts['ray']):.1f} s",
        ),
        row(
            "images/s per core without start-up: local / ray",
            f"{per_core['local']} / {per_core['ray']}",
            note=f"a million images: {figures['core_hours_per_million']['ray']} core-hours on Ray",
        ),
        row(
            "rows equal (ray vs local)",
            comparison.get("equal"),
            note=f"max |dp| {comparison.get('max_abs_dp')}",
        ),
    ]
    return figures, rows


def _timed(command: list[str], out: Path, env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Whole-process wall time, and the time until the first part file appeared."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stderr=subprocess.PIPE, text=True)
    first = None
    while process.poll() is None:
        if first is None and any(out.glob("part-*.parquet")):
            first = time.perf_counter() - started
        time.sleep(0.05)
    wall = time.perf_counter() - started
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode not in (0, 1):  # 1: some images refused by the gate, rows written
        raise RuntimeError(f"{' '.join(command[:6])} ... exited {process.returncode}: {stderr}")
    return wall, first if first is not None else wall


def _compare(local: Path, ray: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    a = pq.read_table(local).sort_by("input_index").to_pylist()
    b = pq.read_table(ray).sort_by("input_index").to_pylist()
    same_inputs = [r["path"] for r in a] == [r["path"] for r in b]
    dp = max(
        (
            abs((x[k] or 0.0) - (y[k] or 0.0))
            for x, y in zip(a, b, strict=False)
            for k in x
            if k.startswith("prob_")
        ),
        default=0.0,
    )
    same_classes = [r["prediction"] for r in a] == [r["prediction"] for r in b]
    return {
        "rows": [len(a), len(b)],
        "same_inputs_in_order": same_inputs,
        "same_predictions": same_classes,
        "max_abs_dp": float(f"{dp:.3g}"),
        "equal": same_inputs and same_classes and dp <= 1e-6,
    }


def _median(values: list[float]) -> float:
    return Stats(tuple(values)).median


def _rotated(names: list[str], r: int) -> list[str]:
    return names[r % len(names) :] + names[: r % len(names)]
