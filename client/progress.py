"""What a sync shows while it runs: a rich progress bar on a terminal, plain lines otherwise.

The sync runner calls ``update(counters)`` after each frame; this module owns
every byte printed while the sync is live (the summary is ``output.sync_text``).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.progress import Progress

PLAIN_EVERY_S = 5.0  # a plain line at most this often (logs, pipes, Windows services)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class SyncProgress:
    """A context manager; ``update`` is safe to call from the event loop."""

    def __init__(self, *, enabled: bool, tty: bool) -> None:
        self.enabled = enabled
        self.tty = tty
        self._bar: Progress | None = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> SyncProgress:
        if self.enabled and self.tty:
            # rich costs 40 ms to import: only a terminal pays for it.
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("menghubungkan ...", total=None)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, c: Any) -> None:
        if not self.enabled:
            return
        text = (f"kirim {c.events_up} event ({_size(c.bytes_up)}) | "
                f"terima {c.events_down} event ({_size(c.bytes_down)})")
        if self._bar is not None:
            self._bar.update(self._task, description=text)
        elif (now := time.monotonic()) - self._last >= PLAIN_EVERY_S:
            self._last = now
            click.echo(text)
