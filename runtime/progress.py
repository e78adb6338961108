"""One progress bar for every command: tqdm (count, rate, ETA) on stderr, only on a terminal, so
piped or redirected output never carries it and stdout stays results only."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(
    items: Iterable[T], total: int, description: str, unit: str = "image", enabled: bool = True
) -> Iterator[T]:
    """``items`` unchanged, with a bar on stderr while they are consumed (when stderr is a
    terminal, ``enabled`` is true and there is more than one item)."""
    if not enabled or total < 2 or not sys.stderr.isatty():
        yield from items
        return
    from tqdm import tqdm

    # A terminal that reports no size (a fresh pseudo-terminal, some CI consoles) makes tqdm
    # hide the bar (zero rows to draw it on); shutil gives 100 x 20 there instead.
    size = shutil.get_terminal_size((100, 20))
    with tqdm(
        items,
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        leave=False,
        ncols=size.columns,
        nrows=size.lines,
    ) as bar:
        yield from bar
