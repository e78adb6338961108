"""``btxrd-run --engine ray`` on a real two-node Ray cluster on this machine.

The head and one worker node (one CPU each) run as Ray's own fault tests run them
(``ray.cluster_utils.Cluster``); ``btxrd-run`` joins it as a separate driver process. Each test
classifies 500 small radiographs and compares every row with the local engine's:

- the driver is killed after a few part files: ``--resume`` finishes the run (and takes over
  the output lock the dead driver held);
- a Ray run into an output another run holds is refused before it reaches the cluster;
- SIGTERM stops it with whole part files, and ``--resume`` finishes it;
- inputs that failed are tried again by ``--resume`` on the cluster;
- the head node dies: one line, exit 2, and ``--resume`` finishes the run;
- the worker node is removed as soon as the first part file is written: Ray restarts its work
  on the head node and the run completes with no row lost or doubled.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from engine_files import (
    SAMPLES,
    assert_same_rows,
    btxrd_run,
    clean_env,
    enlarge,
    kill_when_parts,
    make_radiographs,
    read_rows,
    readme_scale_commands,
    write_config,
)

from btxrd.runtime.output.outlock import lock_path, output_lock

pytest.importorskip("pyarrow")
pytest.importorskip("ray")

pytestmark = pytest.mark.slow

IMAGES = 500
SHARD = 20  # 25 shards: most of the run is still ahead when the first part file appears


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ray-inputs") / "images"
    make_radiographs(folder, IMAGES)
    return folder


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("ray-config") / "config.yaml", SHARD)


@pytest.fixture(scope="module")
def reference(demo_onnx, inputs, config, tmp_path_factory) -> list[dict]:
    """The local engine's rows for the same inputs."""
    out = tmp_path_factory.mktemp("ray-reference") / "local.parquet"
    command = btxrd_run("--model", demo_onnx, "--dir", inputs, "--config", config, "-q", "-o", out)
    subprocess.run(command, env=clean_env(), check=True)
    return read_rows(out)


@pytest.fixture(scope="module")
def cluster():
    """A head node and one worker node, one CPU each, on loopback (for the module: the driver
    test runs first, then the one that removes the worker node)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    worker = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster, worker
    cluster.shutdown()


def test_an_unreachable_cluster_is_one_line_and_leaves_no_run_behind(demo_onnx, tmp_path):
    out = tmp_path / "results.parquet"
    args = ["--model", demo_onnx, "--dir", SAMPLES, "-o", out, "-q"]
    done = subprocess.run(
        btxrd_run(*args, "--engine", "ray", "--ray-address", "127.0.0.1:9"),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "no Ray cluster answers there" in done.stderr
    again = subprocess.run(btxrd_run(*args), env=clean_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr  # the folder of a run that wrote nothing is reused


def test_readme_ray_command_starts_ray_on_this_machine(sample_images, tmp_path):
    """The README's --engine ray command without --ray-address: a private Ray instance here,
    quiet on the terminal (runs before the module's cluster exists)."""
    (command,) = [c for c in readme_scale_commands() if "ray" in c]
    archive = tmp_path / "archive"
    archive.mkdir()
    for sample in sample_images:
        (archive / sample.name).write_bytes(sample.read_bytes())
    done = subprocess.run(
        btxrd_run(*command[1:]), cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert all(
        line.startswith(("DEMO MODEL", "speed:", "wrote ")) for line in done.stderr.splitlines()
    )
    assert len(read_rows(tmp_path / "results.parquet")) == len(sample_images)


def _ray_run(demo_onnx, inputs, config, out: Path, address: str, *more: str) -> list[str]:
    return btxrd_run(
        "--model", demo_onnx, "--dir", inputs, "--config", config, "-o", out,
        "--engine", "ray", "--ray-address", address, *more,
    )  # fmt: skip


def test_a_killed_driver_is_finished_by_resume(
    demo_onnx, inputs, config, reference, cluster, tmp_path
):
    head, _ = cluster
    out = tmp_path / "ray.parquet"
    command = _ray_run(demo_onnx, inputs, config, out, head.address, "-q")
    process = subprocess.Popen(command, env=clean_env())
    kill_when_parts(process, out, 3)
    assert len(list(out.glob("part-*.parquet"))) < IMAGES // SHARD
    # The driver held its output's lock: a killed one leaves the file naming it, and the
    # resume below takes it over without a word.
    assert json.loads(lock_path(out).read_text(encoding="utf-8"))["pid"] == process.pid
    resumed = subprocess.run(
        [*command, "--resume"], env=clean_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "another btxrd run" not in resumed.stderr and not lock_path(out).exists()
    rows = read_rows(out)
    assert [r["input_index"] for r in rows] == list(range(IMAGES))
    assert_same_rows(rows, reference)


def test_a_ray_run_into_an_output_another_run_holds_is_refused(
    demo_onnx, inputs, config, cluster, tmp_path
):
    """One writer per output, Ray driver included: refused before any work reaches the cluster,
    one line naming the holder (here this test process, through the same lock)."""
    head, _ = cluster
    out = tmp_path / "ray.parquet"
    with output_lock(out):
        done = subprocess.run(
            _ray_run(demo_onnx, inputs, config, out, head.address, "-q"),
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1
    assert "another btxrd run is writing it" in done.stderr and f"pid {os.getpid()}" in done.stderr
    assert not out.exists()


def test_sigterm_saves_finished_parts_and_resume_finishes(
    demo_onnx, inputs, config, reference, cluster, tmp_path
):
    """SIGTERM (a job scheduler's stop) to a Ray run: exit 130 with one line, whole part files
    only; ``--resume`` then finishes it."""
    import signal

    head, _ = cluster
    out = tmp_path / "ray.parquet"
    command = _ray_run(demo_onnx, inputs, config, out, head.address, "-q")
    process = subprocess.Popen(command, env=clean_env(), stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_parts(process, out, 1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert stderr.count("\n") == 1 and "rerun with --resume to finish" in stderr, stderr
    assert not list(out.glob(".*.tmp"))
    resumed = subprocess.run(
        [*command, "--resume"], env=clean_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert_same_rows(read_rows(out), reference)


def test_resume_on_ray_tries_failed_inputs_again(demo_onnx, cluster, tmp_path):
    """Inputs refused under a pixel limit are classified on the cluster after the limit is
    raised, their rows put in place in finished parts; the rows equal a local run's."""
    head, _ = cluster
    folder = tmp_path / "images"
    make_radiographs(folder, 24)
    enlarge(folder, ["img00002.jpg", "img00011.jpg", "img00012.jpg"])
    strict = write_config(tmp_path / "strict.yaml", 8, max_pixels=50_000)
    relaxed = write_config(tmp_path / "relaxed.yaml", 8)
    out, local = tmp_path / "ray.parquet", tmp_path / "local.parquet"
    first = subprocess.run(
        _ray_run(demo_onnx, folder, strict, out, head.address, "-q"), env=clean_env(), timeout=300
    )
    assert first.returncode == 1
    assert sum(r["error"] is not None for r in read_rows(out)) == 3
    resumed = subprocess.run(
        _ray_run(demo_onnx, folder, relaxed, out, head.address, "--resume"),
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "trying 3 failed inputs again" in resumed.stderr
    command = btxrd_run("--model", demo_onnx, "--dir", folder, "--config", relaxed, "-o", local)
    subprocess.run([*command, "-q"], env=clean_env(), check=True)
    assert_same_rows(read_rows(out), read_rows(local))


def test_a_killed_worker_node_loses_and_doubles_no_row(
    demo_onnx, inputs, config, reference, cluster, tmp_path
):
    head, worker = cluster
    out = tmp_path / "ray.parquet"
    process = subprocess.Popen(
        _ray_run(demo_onnx, inputs, config, out, head.address),
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_parts(process, out, 1)
        head.remove_node(worker)  # the worker node dies with its actor and whatever it held
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert stdout == ""
    rows = read_rows(out)
    assert [r["input_index"] for r in rows] == list(range(IMAGES))
    assert_same_rows(rows, reference)
    assert "Traceback" not in stderr
    # Ray's own chatter stays out of the user's terminal.
    assert all(line.startswith(("DEMO MODEL", "speed:", "wrote ")) for line in stderr.splitlines())


def _wait_for_parts(process: subprocess.Popen, folder: Path, parts: int) -> None:
    import time

    deadline = time.monotonic() + 120
    while len(list(folder.glob("part-*.parquet"))) < parts:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no part file after 120 s"
        time.sleep(0.02)


def test_a_lost_head_node_is_one_line_and_resume_finishes(
    demo_onnx, inputs, config, reference, tmp_path
):
    """The head node dies mid-run (its own cluster: the module's stays up). Ray would end the
    driver silently after its reconnect timeout (12 s here); btxrd-run says so in one line
    first, exit 2, and ``--resume`` finishes the run with the local engine."""
    from ray.cluster_utils import Cluster

    lost = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        lost.add_node(num_cpus=1)
        lost.wait_for_nodes()
        out = tmp_path / "ray.parquet"
        env = {**clean_env(), "RAY_gcs_rpc_server_reconnect_timeout_s": "12"}
        process = subprocess.Popen(
            _ray_run(demo_onnx, inputs, config, out, lost.address, "-q"),
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for_parts(process, out, 1)
            lost.remove_node(lost.head_node, allow_graceful=False)
            _, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    finally:
        lost.shutdown()
    assert process.returncode == 2, stderr
    (line,) = stderr.splitlines()
    assert line.startswith("btxrd-run: error: the Ray cluster's head (")
    assert "has not answered for" in line and "rerun with --resume to finish" in line, line
    local = btxrd_run("--model", demo_onnx, "--dir", inputs, "--config", config, "-o", out)
    resumed = subprocess.run(
        [*local, "-q", "--resume"], env=clean_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "another btxrd run" not in resumed.stderr and not lock_path(out).exists()
    rows = read_rows(out)
    assert [r["input_index"] for r in rows] == list(range(IMAGES))
    assert_same_rows(rows, reference)
