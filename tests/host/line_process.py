"""A helper process for tests: its stdout lines collected as they come, waited on with a timeout."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any


class LineProcess:
    """``parse`` turns each stdout line into what ``lines`` holds (the text by default)."""

    def __init__(self, cmd: list[str], env: dict[str, str], *, parse: Callable[[str], Any] = str.rstrip,
                 stdin: bool = False, stderr: int | None = subprocess.PIPE) -> None:
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE if stdin else None,
                                     stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.parse = parse
        self.lines: list[Any] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(self.parse(line))
                self._cond.notify_all()

    def wait_until(self, found: Callable[[list[Any]], Any], timeout: float, what: str) -> Any:
        """The first truthy ``found(lines)``, re-evaluated as lines come; AssertionError after ``timeout`` or
        once the process has ended without it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = found(self.lines)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{what} within {timeout} s; last lines: {self.lines[-8:]}")
                self._cond.wait(min(left, 0.2))

    def snapshot(self) -> list[Any]:
        with self._cond:
            return list(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
