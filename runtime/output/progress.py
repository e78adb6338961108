"""One progress bar for every command: tqdm (count, rate, ETA) on stderr, only on a terminal, so
piped or redirected output never carries it and stdout stays results only."""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], total: int, description: str, unit: str = "image", enabled: bool = True
) -> Iterator[T]:
    """``items`` unchanged, with a bar on stderr while they are consumed (when stderr is a
    terminal, ``enabled`` is true and there is more than one item)."""
    if not _shown(total, enabled):
        yield from items
        return
    with _bar(total, description, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


@contextlib.contextmanager
def progress_callback(
    total: int, description: str, unit: str = "image", enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """A callback ``done(count)`` for work that reports how far it is (a pool of processes, say),
    drawing the same bar as ``progress``; a no-op where no bar is shown."""
    if not _shown(total, enabled):
        yield lambda count: None
        return
    with _bar(total, description, unit) as bar:

        def done(count: int) -> None:
            bar.update(count - bar.n)

        yield done


def _shown(total: int, enabled: bool) -> bool:
    return enabled and total >= 2 and sys.stderr.isatty()


def _bar(total: int, description: str, unit: str) -> Any:
    from tqdm import tqdm

    # A terminal that reports no size (a fresh pseudo-terminal, some CI consoles) makes tqdm
    # hide the bar (zero rows to draw it on); shutil gives 100 x 20 there instead.
    size = shutil.get_terminal_size((100, 20))
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        leave=False,
        ncols=size.columns,
        nrows=size.lines,
    )
