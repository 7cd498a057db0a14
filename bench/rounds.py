"""One benchmark round in a child process of its own, so each round's peak memory is its own.

The child prints ``ready`` once set up, waits for ``go`` on stdin, runs the timed
part and prints one JSON line with its figures.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

TIMEOUT_S = 1800.0


class Round:
    """A child process running one round; ``go`` is the timed part."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True)
        self.result: dict[str, Any] | None = None
        line = self._line()
        assert line == "ready", line

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=TIMEOUT_S)
            raise AssertionError(f"the benchmark child failed: "
                                 f"{self.log.read_text(errors='replace')}")
        return line.strip()

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self.result = json.loads(self._line())

    def finish(self) -> dict[str, Any]:
        """Wait for the child to close its files and exit; what it reported."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        assert self.proc.wait(timeout=TIMEOUT_S) == 0, self.log.read_text(errors="replace")
        self.log.unlink()
        assert self.result is not None
        return self.result
