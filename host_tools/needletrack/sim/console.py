"""The virtual probe's serial console: its REPL on a pseudo-terminal that stock mpremote drives unchanged.

A board's USB serial line carries the firmware's output and MicroPython's REPL; mpremote interrupts main.py
with Ctrl-C, enters the raw REPL with Ctrl-A and soft-reboots with Ctrl-D before each command. The unix port
has the friendly and raw REPLs on a terminal, but there a Ctrl-D ends the process instead of rebooting, and
nothing says "soft reboot", which mpremote waits for on every fresh connection. The console adds what is
missing:

```
 mpremote / a terminal / a test ──► /dev/pts/N   the path given out; the same across reboots
                                        │ pty master
        Console relay thread ── strips the probe's private marks, tracks friendly/raw REPL,
                                        │ holds input until the board is up, drops output nobody reads
                                        │ pty master of a new pty per boot: the process's controlling
                                        │ terminal, so a Ctrl-C byte is SIGINT (KeyboardInterrupt)
   micropython -i sim/mpy/vprobe.py SESSION --console BOOT      one process per boot
        board, flash at "/" ─► boot.py, main.py ─► (Ctrl-C) ─► REPL
```

When the process ends, the console boots the next one:

- after ``machine.reset()`` or a watchdog bite (the probe leaves ``reset <cause>`` in a state file): a hard
  reset; main.py runs and the device clock restarts at 0;
- otherwise (Ctrl-D on an empty REPL line, ``machine.soft_reset()``, ``sys.exit()``): a soft reboot. The
  console prints ``MPY: soft reboot``; from the friendly REPL the new boot runs main.py, from the raw REPL it
  runs boot.py only and the console takes it into the raw REPL, so the line shows ``raw REPL; CTRL-B to
  exit`` next, as a board's does. The device clock runs on.

What the probe writes while no program has the terminal open is dropped, as a board's USB CDC drops it with no
host listening; a program that opens the terminal sees the line from then on.

``power_cycle()`` is the battery pulled and put back: the process is killed wherever it is (a file write half
done stays half done; nothing is flushed or closed), and it boots again as after power-on, flash kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import select
import signal
import subprocess
import termios
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from needletrack import paths
from needletrack.sim.runner import HEAPSIZE, heapsize

SOFT_REBOOT = b"MPY: soft reboot\r\n"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.\r\n'
PROMPT = b">>> "
MARK = b"\x1b]vprobe;"  # the private escapes vprobe.py prints: MARK + name + MARK_END
MARK_END = b"\x07"
_MARK_MAX = 64

# machine.reset_cause() values (the virtual board numbers them as ESP32 does)
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

_QUEUE_MAX = 1 << 16  # bytes held for a side that is not reading; beyond it, the oldest are dropped
_TICK_S = 0.05


class ConsoleError(RuntimeError):
    """The virtual probe behind the console failed to boot; the message carries its output."""


@dataclass(frozen=True)
class Boot:
    """One boot of the virtual probe: kind is "power-on", "hard" or "soft"; script "main" or "raw"."""

    kind: str
    script: str
    cause: int
    pid: int
    t_s: float  # host monotonic time


class _Marks:
    """Splits the probe's output into data and its private marks, across read boundaries."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        buf = self.pending + data
        self.pending = b""
        out: list[tuple[str, bytes]] = []
        i = 0
        while True:
            j = buf.find(MARK, i)
            if j < 0:
                k = _held_tail(buf, i)
                if k > i:
                    out.append(("data", buf[i:k]))
                self.pending = buf[k:]
                return out
            if j > i:
                out.append(("data", buf[i:j]))
            e = buf.find(MARK_END, j + len(MARK))
            if e < 0:
                if len(buf) - j <= _MARK_MAX:
                    self.pending = buf[j:]
                    return out
                out.append(("data", buf[j : j + 1]))  # not a mark after all
                i = j + 1
                continue
            out.append(("mark", buf[j + len(MARK) : e]))
            i = e + 1

    def flush(self) -> bytes:
        rest, self.pending = self.pending, b""
        return rest


def _held_tail(buf: bytes, start: int) -> int:
    # Where a possible beginning of a mark starts at the end of buf (len(buf) if none).
    for n in range(min(len(MARK) - 1, len(buf) - start), 0, -1):
        if buf.endswith(MARK[:n]):
            return len(buf) - n
    return len(buf)


def _take_controlling_terminal() -> None:
    # In the child, after setsid(): its stdin, the boot's pty, becomes its controlling terminal, so the line
    # discipline turns a Ctrl-C byte into SIGINT while code runs (KeyboardInterrupt), as on a board.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _device_tty(fd: int) -> None:
    # Bytes pass unchanged both ways, as on a USB serial line; only Ctrl-C keeps a meaning (SIGINT), the other
    # signal characters are switched off so no byte can stop or kill the interpreter.
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] |= termios.ISIG
    off = os.fpathconf(fd, "PC_VDISABLE")
    cc = attrs[6]
    cc[termios.VINTR] = b"\x03"
    for name in ("VQUIT", "VSUSP", "VDSUSP"):
        if hasattr(termios, name):
            cc[getattr(termios, name)] = bytes([off])
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


class _Child:
    def __init__(self, proc: subprocess.Popen[bytes], master: int, boot: Boot) -> None:
        self.proc = proc
        self.master = master
        self.boot = boot
        self.marks = _Marks()
        self.booted = False  # the board is up: the firmware (or the REPL) may see input
        self.ready = False  # input flows to it
        self.hiding = False  # raw boot: the unix REPL's own banner is replaced by the raw REPL's
        self.sent_raw = False
        self.hidden = b""


class Console:
    """The virtual probe's serial console on a pseudo-terminal.

    ``Console(work_dir, session).start()`` boots the probe (main.py runs, as on power-up) and returns the
    path of the terminal to give to mpremote; ``stop()`` ends the probe and closes the terminal. ``session``
    is the session.json the runner writes (a path, or the same content as a dict); the console keeps its own
    files in ``work_dir/console``. With ``provision``, the first boot stores the session's configuration and
    calibration on the flash (a factory-fresh device); later boots keep what the flash holds.
    """

    def __init__(self, work_dir: Path, session: Path | dict[str, Any], *, provision: bool = True,
                 boot_timeout_s: float = 30.0) -> None:
        self.work = Path(work_dir).resolve() / "console"
        self.work.mkdir(parents=True, exist_ok=True)
        if isinstance(session, dict):
            path = self.work / "session.json"
            path.write_text(json.dumps(session, indent=1))
            session = path
        self.session = Path(session).resolve()
        doc = json.loads(self.session.read_text())
        # The board's heap where the board's costs are charged (runner.heapsize), else the emulation's default.
        self.heapsize = heapsize(doc["board"]) if doc.get("cpu") == "board" and "board" in doc else HEAPSIZE
        self.provision = provision
        self.boot_timeout_s = boot_timeout_s
        self.path: str | None = None
        self.boots: list[Boot] = []
        self.error: BaseException | None = None
        self._host: int | None = None
        self._wake_r = self._wake_w = -1
        self._child: _Child | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._up = threading.Event()  # first boot reached, or the console failed
        self._connected = False
        self._to_host = bytearray()
        self._to_child = bytearray()
        self._raw_mode = False
        self._mode_tail = b""
        self._tail = bytearray()  # the probe's last output, for error messages
        self._t_start = 0.0
        self._t_power = 0.0
        self._cut_lock = threading.Lock()
        self._cut_pid: int | None = None  # the boot a power cut killed, until the relay has seen it end
        self._cut_off_s = 0.0
        self._power_on_at: float | None = None  # when the power comes back after a cut

    # -- public ----------------------------------------------------------------------------------------

    def start(self) -> str:
        """Boot the probe and return the terminal's path; raises ConsoleError if the probe does not boot."""
        if self._thread is not None:
            raise RuntimeError("console already started")
        host, slave = os.openpty()
        try:
            tty.setraw(slave)
            self.path = os.ttyname(slave)
        finally:
            os.close(slave)  # held open by nobody: the relay sees (POLLHUP) when a program has it open
        os.set_blocking(host, False)
        self._host = host
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._t_start = self._t_power = time.monotonic()
        try:
            self._spawn("power-on", "main", PWRON_RESET, self.provision)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._relay, name="vprobe-console", daemon=True)
        self._thread.start()
        if not self._up.wait(self.boot_timeout_s) or self.error is not None:
            err = self.error or ConsoleError(f"the virtual probe did not boot in {self.boot_timeout_s:g} s:\n"
                                             f"{self.output_tail()}")
            self.stop()
            raise err
        return self.path

    def stop(self) -> None:
        """End the probe's process and close the terminal. Safe to call more than once."""
        self._stopping = True
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._child is not None:
            self._end_child(self._child)
            self._child = None
        for fd in (self._host, self._wake_r, self._wake_w):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._host = None
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> Console:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The process of the current boot."""
        child = self._child
        return child.proc.pid if child is not None else None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    def output_tail(self, n: int = 4000) -> str:
        return bytes(self._tail[-n:]).decode(errors="replace")

    def power_cycle(self, after_s: float = 0.0, off_s: float = 0.0, timeout_s: float = 30.0) -> Boot:
        """Cut the power `after_s` seconds from now and restore it `off_s` later; returns the new boot once the
        board is up (main.py starting).

        As a battery pulled out: the probe's process is killed (SIGKILL) wherever it is, mid-write included;
        what it had written to the flash directory stays as it was, what the host had sent and it had not read
        is lost, and nothing more reaches the line. The next boot is a power-on: main.py runs, the device clock
        starts again, ``machine.reset_cause()`` is PWRON_RESET, the flash keeps what it holds. The delay is
        measured on this thread, so a caller can send something and cut the power at a chosen point after it.
        """
        if self._thread is None:
            raise RuntimeError("console not started")
        if after_s > 0:
            time.sleep(after_s)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._cut_lock:
                child = self._child
                if self._cut_pid is None and self._power_on_at is None and child is not None:
                    self._cut_pid = child.proc.pid
                    self._cut_off_s = max(off_s, 0.0)
                    n_boots = len(self.boots)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.proc.pid, signal.SIGKILL)
                    break
            # Between two boots (the relay is starting the next one): the power goes when there is a process.
            if time.monotonic() > deadline or not self.alive:
                raise ConsoleError(f"no probe process to cut the power of:\n{self.output_tail()}")
            time.sleep(0.001)
        while time.monotonic() < deadline:
            if self.error is not None:
                raise self.error
            current = self._child
            if len(self.boots) > n_boots and current is not None and current.boot is self.boots[-1] \
                    and current.booted:
                return current.boot
            time.sleep(0.005)
        raise ConsoleError(f"the virtual probe did not power on again in {timeout_s:g} s:\n{self.output_tail()}")

    # -- the probe's processes -------------------------------------------------------------------------

    def _spawn(self, kind: str, script: str, cause: int, provision: bool = False) -> None:
        now = time.monotonic()
        if kind != "soft":
            self._t_power = now
        state = self.work / "state"
        state.write_text("")
        boot_file = self.work / "boot.json"
        boot_file.write_text(json.dumps({
            "boot": script,
            "cause": cause,
            "uptime_us": 0 if kind != "soft" else round((now - self._t_power) * 1e6),
            "world_us": round((now - self._t_start) * 1e6),
            "provision": provision,
            "state": str(state),
        }))
        cmd = [paths.micropython(), "-X", f"heapsize={self.heapsize}", "-i",
               str(paths.VIRTUAL_BOARD / "vprobe.py"), str(self.session), "--console", str(boot_file)]
        env = dict(os.environ, MICROPYPATH=str(paths.VIRTUAL_BOARD))
        master, slave = os.openpty()
        try:
            _device_tty(slave)
            proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env,
                                    start_new_session=True, preexec_fn=_take_controlling_terminal)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        boot = Boot(kind, script, cause, proc.pid, now)
        self.boots.append(boot)
        self._child = _Child(proc, master, boot)
        self._raw_mode = script == "raw"

    def _end_child(self, child: _Child) -> int:
        # The process has closed its terminal (it is ending) or the console is stopping: make sure it is gone.
        proc = child.proc
        if proc.poll() is None and self._stopping:
            proc.terminate()
        try:
            rc = proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(timeout=3)
        with contextlib.suppress(OSError):
            os.close(child.master)
        return rc

    def device_epoch(self) -> float | None:
        """The host time (time.monotonic) at which this boot's device clock read 0: the true mapping from
        device time to host time, which a real probe cannot give (None before the boot has started)."""
        try:
            words = (self.work / "state").read_text().split()
        except OSError:
            return None
        for key, value in itertools.pairwise(words):
            if key == "epoch_us":
                return int(value) / 1e6
        return None

    def _reset_cause(self) -> int | None:
        try:
            lines = (self.work / "state").read_text().split()
        except OSError:
            return None
        if len(lines) >= 2 and lines[-2] == "reset":
            return int(lines[-1])
        return None

    def _child_ended(self, child: _Child) -> None:
        rest = child.marks.flush()
        if rest:
            self._from_probe(child, rest)
        rc = self._end_child(child)
        with self._cut_lock:
            self._child = None
            cut = self._cut_pid == child.proc.pid
            if cut:
                self._cut_pid = None
                self._power_on_at = time.monotonic() + self._cut_off_s
        if self._stopping:
            return
        if cut:
            self._to_child.clear()  # sent to a board without power: lost
            return
        if not child.booted:
            self.error = ConsoleError(f"the virtual probe failed to boot (exit code {rc}):\n"
                                      f"{self.output_tail()}")
            self._send_host(b"\r\n# virtual probe: failed to boot, see the console's error\r\n")
            self._up.set()
            return
        cause = self._reset_cause()
        if cause is None or cause == SOFT_RESET:
            self._send_host(SOFT_REBOOT)
            self._spawn("soft", "raw" if self._raw_mode else "main", SOFT_RESET)
        else:
            self._to_child.clear()  # what was sent while the board was resetting is lost, as on a board
            self._spawn("hard", "main", cause)

    # -- the relay -------------------------------------------------------------------------------------

    def _relay(self) -> None:
        try:
            self._relay_loop()
        except BaseException as e:  # keep the reason; stop() still cleans up
            self.error = e
            self._up.set()

    def _relay_loop(self) -> None:
        assert self._host is not None
        host = self._host
        probe_hup = select.poll()
        probe_hup.register(host, select.POLLIN)
        while not self._stopping:
            if self._power_on_at is not None and time.monotonic() >= self._power_on_at:
                with self._cut_lock:
                    self._power_on_at = None
                    self._spawn("power-on", "main", PWRON_RESET)
            # A pty master reports POLLHUP while no program has the terminal open.
            self._connected = not any(ev & select.POLLHUP for _, ev in probe_hup.poll(0))
            if not self._connected:
                self._to_host.clear()
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            child = self._child
            if child is not None:
                mask = select.POLLIN
                if child.ready and self._to_child:
                    mask |= select.POLLOUT
                poller.register(child.master, mask)
            if self._connected:
                poller.register(host, select.POLLIN | (select.POLLOUT if self._to_host else 0))
            tick_s = _TICK_S
            if self._power_on_at is not None:
                tick_s = min(tick_s, max(self._power_on_at - time.monotonic(), 0.0))
            for fd, ev in poller.poll(tick_s * 1000):
                if fd == self._wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self._wake_r, 64)
                elif child is not None and fd == child.master:
                    if ev & select.POLLOUT:
                        self._write(child.master, self._to_child)
                    if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        data = self._read(child.master)
                        if data is None:
                            self._child_ended(child)
                        elif data:
                            self._from_probe(child, data)
                elif fd == host and self._connected:
                    if ev & select.POLLOUT:
                        self._write(host, self._to_host)
                    if ev & select.POLLIN:
                        data = self._read(host)
                        if data:
                            self._queue(self._to_child, data)

    @staticmethod
    def _read(fd: int) -> bytes | None:
        # None: the other side is gone (EIO on a pty master).
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return b""
        except OSError:
            return None
        return data if data else None

    @staticmethod
    def _write(fd: int, queue: bytearray) -> None:
        try:
            n = os.write(fd, queue)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            queue.clear()
            return
        del queue[:n]

    @staticmethod
    def _queue(queue: bytearray, data: bytes) -> None:
        queue += data
        if len(queue) > _QUEUE_MAX:
            del queue[: len(queue) - _QUEUE_MAX]

    def _send_host(self, data: bytes) -> None:
        text = self._mode_tail + data
        raw_at, friendly_at = text.rfind(RAW_BANNER), text.rfind(FRIENDLY_BANNER)
        if raw_at >= 0 or friendly_at >= 0:
            self._raw_mode = raw_at > friendly_at
        self._mode_tail = text[-(len(FRIENDLY_BANNER) - 1) :]
        if self._connected:
            self._queue(self._to_host, data)

    def _from_probe(self, child: _Child, data: bytes) -> None:
        for kind, piece in child.marks.feed(data):
            if kind == "mark":
                if piece == b"booted":
                    child.booted = True
                    child.ready = child.boot.script == "main"
                    self._up.set()
                elif piece == b"repl" and child.boot.script == "raw" and not child.sent_raw:
                    child.hiding = True
                elif piece == b"exit":
                    child.ready = False
                    child.proc.terminate()  # it waits for this: see vprobe.halt()
                continue
            self._tail += piece
            del self._tail[:-16384]
            if not child.hiding:
                self._send_host(piece)
                continue
            child.hidden += piece
            if not child.sent_raw and PROMPT in child.hidden:
                os.write(child.master, b"\x01")  # Ctrl-A at the friendly prompt: into the raw REPL
                child.sent_raw = True
            at = child.hidden.find(RAW_BANNER) if child.sent_raw else -1
            if at >= 0:
                self._send_host(child.hidden[at:])
                child.hidden = b""
                child.hiding = False
                child.ready = True
