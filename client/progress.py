"""What a sync shows while it runs: a rich live line on a terminal, plain lines otherwise.

The sync runner calls ``update(facts)`` (a ``ProgressFacts``) after each frame;
``retrying`` when it waits before another attempt. This module owns every byte
printed while the sync is live (the summary is ``output.sync_text``).

The line says what moves and how much is left, in the operator's words:
"Mengirim 1.200 dari 3.128 perubahan (Peserta Didik 600, Nilai 600)", then
"Menerima 40 dari 769 perubahan (Nilai 40)". A stuck sync is told from a slow
one by "menunggu server pusat (12 detik)": nothing has come or gone for that
long. Frames come whole, so a very slow link may say so between two of them.
A ticker thread keeps that count going when no frame comes at all: a stuck
sync calls ``update`` no more.

Not a terminal (a log, a pipe, a Windows service): a line at each change of
stage, and at most every ``PLAIN_EVERY_S`` between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import click

from .output import number, per_table
from .sync import ProgressFacts, Stage

if TYPE_CHECKING:
    from rich.progress import Progress

    from .sync import Retrying

PLAIN_EVERY_S = 5.0  # a plain line at most this often (logs, pipes, Windows services)
WAITING_AFTER_S = 5.0  # nothing moved for this long: say the sync waits for the centre
TICK_S = 1.0  # how often the ticker looks
TABLES_SHOWN = 4  # tables named on the line; the rest are "lainnya"

CONNECTING = "Menghubungkan ke server pusat"


def progress_text(facts: ProgressFacts | None, idle_s: float = 0.0) -> str:
    """The progress line for ``facts`` (None: nothing heard yet), when nothing has moved
    for ``idle_s`` seconds."""
    if facts is None or facts.stage is Stage.CONNECT:
        text = CONNECTING
        if facts is not None and facts.attempt > 1:
            text += f" (percobaan {facts.attempt})"
    elif facts.stage is Stage.CHECK:
        text = "Memeriksa kecocokan data dengan server pusat"
    else:
        text = _moving(facts)
    if idle_s >= WAITING_AFTER_S:
        text += f"; menunggu server pusat ({int(idle_s)} detik)"
    return text


def _moving(f: ProgressFacts) -> str:
    to_send, sent = sum(f.to_send.values()), sum(f.sent.values())
    received = sum(f.received.values())
    to_receive = max(f.to_receive or 0, received)
    sending, receiving = sent < to_send, received < to_receive
    parts = []
    if sending or (to_send and not receiving):
        parts.append(f"Mengirim {number(sent)} dari {number(to_send)} perubahan"
                     f"{_tables(f.sent)}")
    if receiving or (to_receive and not sending):
        parts.append(f"Menerima {number(received)} dari {number(to_receive)} perubahan"
                     f"{_tables(f.received)}")
    return " | ".join(parts) or "Tidak ada perubahan untuk dikirim atau diterima"


def _tables(counts: Mapping[str, int]) -> str:
    """" (Peserta Didik 600, Nilai 600)": the tables, most first."""
    shown = per_table(counts, TABLES_SHOWN)
    return f" ({shown})" if shown else ""


def _moved(f: ProgressFacts) -> tuple[object, ...]:
    """What changes when the sync moves (the centre's Welcome, a frame either way)."""
    return (f.stage, f.attempt, f.bytes_up, f.bytes_down, f.to_receive)


def _phase(f: ProgressFacts | None) -> tuple[object, ...]:
    """A change of this prints a plain line at once."""
    if f is None:  # as a session's first facts: connecting
        return (Stage.CONNECT, 1)
    if f.stage is not Stage.TRANSFER:
        return (f.stage, f.attempt)
    sending = sum(f.sent.values()) < sum(f.to_send.values())
    receiving = sum(f.received.values()) < (f.to_receive or 0)
    return (f.stage, f.attempt, sending, receiving)


class SyncProgress:
    """A context manager; ``update`` is safe to call from the event loop.

    ``clock`` and ``echo`` are for tests (a fake clock; lines into a list); ``tick_s``
    None runs no ticker (call ``tick`` instead).
    """

    def __init__(self, *, enabled: bool, tty: bool,
                 clock: Callable[[], float] = time.monotonic,
                 echo: Callable[[str], None] = click.echo,
                 tick_s: float | None = TICK_S) -> None:
        self.enabled = enabled
        self.tty = tty
        self.clock = clock
        self.echo = echo
        self.tick_s = tick_s
        self._bar: Progress | None = None
        self._task: Any = None
        self._lock = threading.Lock()
        self._facts: ProgressFacts | None = None
        self._retry: tuple[float, float] | None = None  # a wait before another attempt: (s, end)
        self._moved_at = self._printed_at = clock()
        self._printed_phase: tuple[object, ...] | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __enter__(self) -> SyncProgress:
        if not self.enabled:
            return self
        self._moved_at = self.clock()
        if self.tty:
            # rich costs 40 ms to import: only a terminal pays for it.
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TimeElapsedColumn(), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(CONNECTING, total=None)
        else:
            self._show(self.clock())
        if self.tick_s is not None:
            self._ticker = threading.Thread(target=self._tick_until_stopped, daemon=True,
                                            name="sync-progress")
            self._ticker.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._bar is not None:
            self._bar.stop()

    def update(self, facts: ProgressFacts) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = self.clock()
            if self._facts is None or _moved(facts) != _moved(self._facts):
                self._moved_at = now
            self._facts, self._retry = facts, None
            self._show(now)

    def retrying(self, r: Retrying) -> None:
        """The sync waits ``r.delay_s`` before attempt ``r.attempt`` (its reason is
        printed by the caller, once)."""
        if not self.enabled:
            return
        with self._lock:
            now = self.clock()
            # Then it connects again: a wait for the centre counts from the end of this one.
            self._facts = ProgressFacts(attempt=r.attempt)
            self._retry = (r.delay_s, now + r.delay_s)
            self._moved_at = now + r.delay_s
            self._show(now)

    def tick(self) -> None:
        """Say again how long nothing has moved (the ticker calls it)."""
        if not self.enabled:
            return
        with self._lock:
            self._show(self.clock(), ticking=True)

    def text(self) -> str:
        """The line as it stands now."""
        with self._lock:
            return self._text(self.clock())

    def _text(self, now: float) -> str:
        if self._retrying(now):
            assert self._retry is not None and self._facts is not None
            return (f"Menunggu {max(1, round(self._retry[0]))} detik sebelum mencoba lagi "
                    f"(percobaan {self._facts.attempt})")
        return progress_text(self._facts, now - self._moved_at)

    def _retrying(self, now: float) -> bool:
        return self._retry is not None and now < self._retry[1]

    def _show(self, now: float, ticking: bool = False) -> None:
        text = self._text(now)
        if self._bar is not None:
            self._bar.update(self._task, description=text)
            return
        phase = (self._retrying(now), *_phase(self._facts))
        waiting = now - self._moved_at >= WAITING_AFTER_S
        due = now - self._printed_at >= PLAIN_EVERY_S
        # Not a terminal: a line at each change of stage, else now and then; the ticker
        # speaks only of a wait.
        if phase != self._printed_phase or (due and (waiting or not ticking)):
            self._printed_phase, self._printed_at = phase, now
            self.echo(text)

    def _tick_until_stopped(self) -> None:
        assert self.tick_s is not None
        while not self._stop.wait(self.tick_s):
            self.tick()
