"""Shards classified on a Ray cluster: Ray Data's actor pool, one ``Classifier`` per actor.

Each actor rebuilds the runtime's own ``Classifier`` from the driver's (it pickles as its
settings) with ``ray_cpus_per_worker`` onnxruntime and decode threads, and runs
``rows.classify_shard`` on one shard at a time; the driver writes each shard's part file as it
arrives. Ray retries the work of a lost worker node (actors restart, tasks are retried); a lost
driver is what ``--resume`` is for. Ray's own job checkpointing (beta) is not used.

Ray is quiet: no dashboard, no usage report, worker logs stay in Ray's session folder, and what
Ray prints in this process (retried tasks, native warnings) goes to ``_btxrd_ray.log`` in the
output folder instead of the user's terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from btxrd.runtime.engine.manifest import LOG_FILE, Shard
from btxrd.runtime.errors import ConfigError
from btxrd.runtime.install import install_hint

__all__ = ["LOG_FILE", "classify_on_ray", "ray_output_to", "require_ray"]


def require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(
            f"--engine ray needs Ray, which is not installed: {install_hint('ray')} (or use "
            "--engine local)"
        ) from None
    return ray


class ShardWorker:
    """A Ray actor: one classifier, one shard per call (Ray Data's callable-class pattern)."""

    def __init__(self, state: dict[str, Any], extra: list[str], cwd: str) -> None:
        from btxrd.runtime.engine.rows import worker_cwd
        from btxrd.runtime.model.classifier import Classifier

        worker_cwd(cwd)
        self.classifier = Classifier.__new__(Classifier)
        self.classifier.__setstate__(state)
        self.extra = extra

    def __call__(self, batch: dict[str, Any]) -> Any:
        import pyarrow

        from btxrd.runtime.engine.rows import classify_shard

        tables = [
            classify_shard(self.classifier, pickle.loads(payload), self.extra)
            for payload in batch["payload"]
        ]
        return pyarrow.concat_tables(tables)


def classify_on_ray(
    classifier: Any,
    shards: Sequence[Shard],
    extra: list[str],
    *,
    address: str,
    cpus_per_worker: int,
    on_lost: Callable[[str], None],
) -> Iterator[Any]:
    """Yield pyarrow tables of rows as the cluster finishes shards: in any order, and a shard's
    rows may come in more than one table (``input_index`` tells them apart). Run it inside
    ``ray_output_to`` to keep Ray's output off the terminal. ``on_lost`` is called (from another
    thread) when the cluster's head stops answering, with what happened; it must end the
    process."""
    ray = require_ray()
    _connect(ray, address)
    watch = _head_watch(ray, on_lost)
    try:
        yield from _run(ray, classifier, shards, extra, cpus_per_worker)
    finally:
        if watch is not None:
            watch.stop()
        ray.shutdown()


def _head_watch(ray, on_lost: Callable[[str], None]) -> HeadWatch | None:
    """A running ``HeadWatch``, or None under Ray Client (``ray://``), which has no GCS address
    here and raises its own ``ConnectionError`` when the cluster goes."""
    try:
        address = ray.get_runtime_context().gcs_address
    except Exception:  # Ray Client's context does not have it
        return None
    if not isinstance(address, str) or ":" not in address:
        return None
    watch = HeadWatch(address, on_lost)
    watch.start()
    return watch


def _run(ray, classifier, shards, extra, cpus_per_worker) -> Iterator[Any]:
    if not shards:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    workers = max(1, min(len(shards), cpus // cpus_per_worker))
    state = {
        **classifier.__getstate__(),
        "model_path": Path(os.path.abspath(classifier.model_path)),
        "threads": cpus_per_worker,
        "decode_workers": cpus_per_worker,
    }
    items = [{"shard": s.index, "payload": pickle.dumps(s)} for s in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    results = dataset.map_batches(
        ShardWorker,
        fn_constructor_kwargs={"state": state, "extra": extra, "cwd": os.getcwd()},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        batch_format="pyarrow",
    )
    for block in results.iter_batches(batch_size=None, batch_format="pyarrow"):
        if block.num_rows:
            yield block


def _connect(ray, address: str) -> None:
    options: dict[str, Any] = {
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        "configure_logging": True,
    }
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # ray.init installs its own SIGTERM handler; btxrd's (SIGTERM ends a run as Ctrl-C does,
    # exit 130, finished parts saved) is put back.
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **options)
        else:  # a private instance on this machine: every core, nothing listening outside
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"a Ray cluster at {address!r}" if address else "a Ray instance on this machine"
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot start or join {where} ({detail}); check --ray-address (start a cluster with "
            "`ray start --head`), or use --engine local"
        ) from None
    if main_thread and sigterm is not None:
        signal.signal(signal.SIGTERM, sigterm)


# Ray's own limit, after which a driver whose cluster head is gone terminates itself.
_RAY_RECONNECT_SETTING = "RAY_gcs_rpc_server_reconnect_timeout_s"
_RAY_RECONNECT_DEFAULT = 60.0


class HeadWatch(threading.Thread):
    """Watches the cluster's head (its GCS port) while a run goes on.

    When the head is lost, Ray keeps waiting for it for ``gcs_rpc_server_reconnect_timeout_s``
    (60 s by default), then ends the driver from its native code: exit 1, with the reason only
    in Ray's log, so the user's terminal would show nothing. This watch acts first, after half
    that time without an answer, by calling ``on_lost`` (which says so in one line and ends the
    process); a head that comes back sooner (Ray's GCS fault tolerance) costs nothing.
    """

    def __init__(self, gcs_address: str, on_lost: Callable[[str], None]) -> None:
        super().__init__(name="btxrd-ray-head-watch", daemon=True)
        host, _, port = gcs_address.rpartition(":")
        self.target = (host or "127.0.0.1", int(port))
        self.address = gcs_address
        self.on_lost = on_lost
        try:
            ray_limit = float(os.environ.get(_RAY_RECONNECT_SETTING, _RAY_RECONNECT_DEFAULT))
        except ValueError:
            ray_limit = _RAY_RECONNECT_DEFAULT
        self.patience = 0.5 * ray_limit
        self.interval = min(2.0, self.patience / 4)
        self._stopped = threading.Event()

    def run(self) -> None:
        silent_since: float | None = None
        while not self._stopped.wait(self.interval):
            if self._answers():
                silent_since = None
                continue
            now = time.monotonic()
            silent_since = silent_since if silent_since is not None else now
            if now - silent_since >= self.patience and not self._stopped.is_set():
                self.on_lost(
                    f"the Ray cluster's head ({self.address}) has not answered for "
                    f"{now - silent_since:.0f} s"
                )
                return

    def stop(self) -> None:
        self._stopped.set()

    def _answers(self) -> bool:
        try:
            with socket.create_connection(self.target, timeout=self.interval):
                return True
        except OSError:
            return False


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A cluster's HOST:PORT must accept a connection: ray.init would retry for ever."""
    host, _, port = address.rpartition(":")
    if host.startswith("ray://"):
        return  # Ray Client: ray.init reports its own errors
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"--ray-address {address}: no Ray cluster answers there ({cause}); give the head's "
            "HOST:PORT (`ray start --head` prints it), 'auto' on a cluster machine, or use "
            "--engine local"
        ) from None


@contextlib.contextmanager
def ray_output_to(log: Path) -> Iterator[None]:
    """Send what Ray prints to ``log``: its native code's output on descriptors 1 and 2, and
    the driver's Python ``sys.stdout`` (Ray prints retried tasks' errors there; a Parquet run
    writes no results on stdout). btxrd's own messages (``sys.stderr``) still reach the
    user's stderr."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report, no notice of it
    try:
        ours = sys.stderr.fileno() == 2 and sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        ours = False  # not files (a test runner's capture): leave the descriptors alone
    if not ours:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    original = sys.stdout, sys.stderr
    sink = open(log, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    for fd in (1, 2):
        os.dup2(sink.fileno(), fd)
    sys.stdout = sink
    sys.stderr = open(  # noqa: SIM115 - closed below
        saved[2],
        "w",
        buffering=1,
        encoding=original[1].encoding,
        errors="backslashreplace",
        closefd=False,
    )
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stdout, sys.stderr = original
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        sink.close()
