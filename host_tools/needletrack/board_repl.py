"""A MicroPython board on a serial port, through mpremote's transport: its raw REPL, and its boot banner.

Entering the raw REPL interrupts the firmware (Ctrl-C) and, by default, soft-resets the board first, as
mpremote does: the board then runs boot.py only, whose watchdog keeper feeds the watchdog for as long as the
host holds the REPL. ``restart()`` leaves the raw REPL and soft-resets into the firmware (boot.py, main.py)
and waits for its boot banner line.

Every failure is a DeviceError whose text says what happened and what to do next.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BANNER_PREFIX = "NeedleTrack "
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_BANNER = re.compile(r"NeedleTrack (\S+)((?: [a-z_]+=\S*)*)\s*$")
# USB vendors of the supported boards and of the USB-serial bridges on ESP32 boards
KNOWN_VIDS = {
    0x303A: "Espressif",
    0x2E8A: "Raspberry Pi",
    0x10C4: "Silicon Labs CP210x",
    0x1A86: "WCH CH34x",
    0x0403: "FTDI",
}


class DeviceError(Exception):
    """A refusal or failure: message (what happened) and hint (what to do next)."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class NoDevice(DeviceError):
    exit_code = 3


class PortUnavailable(DeviceError):
    exit_code = 3


class NotMicroPython(DeviceError):
    exit_code = 4


class Incompatible(DeviceError):
    exit_code = 5


class LinkLost(DeviceError):
    exit_code = 9


class FirmwareDidNotStart(DeviceError):
    exit_code = 8


# -- finding the board ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    device: str
    description: str
    vid: int | None = None
    pid: int | None = None

    def __str__(self) -> str:
        ids = f" [{self.vid:04x}:{self.pid:04x}]" if self.vid is not None and self.pid is not None else ""
        return f"{self.device} ({self.description}{ids})"


def usb_ports() -> list[Port]:
    """Serial ports on USB (a board's native USB or its USB-serial bridge), as mpremote's `auto` sees them."""
    import serial.tools.list_ports

    ports = []
    for p in sorted(serial.tools.list_ports.comports()):
        if p.vid is None or p.pid is None:
            continue
        ports.append(Port(p.device, p.description or KNOWN_VIDS.get(p.vid, "USB serial"), p.vid, p.pid))
    return ports


_NO_DEVICE_HINT = (
    "Plug the board in with a data USB cable (some cables carry power only); `mpremote devs` lists "
    "the serial ports. A board without MicroPython shows no serial port: install it first "
    "(docs/flashing.md). For the virtual probe, start `needletrack sim serve` and pass "
    "--port /dev/pts/N as it prints."
)


def resolve_port(port: str | None, list_ports: Callable[[], list[Port]] | None = None) -> str:
    """The port to use: PORT as given, or with None / "auto" the one USB serial port there is."""
    if port and port != "auto":
        if not os.path.exists(port) and not port.startswith(("socket://", "rfc2217://")):
            raise NoDevice(f"no device at {port}", _NO_DEVICE_HINT)
        return port
    ports = (list_ports or usb_ports)()
    if not ports:
        raise NoDevice("no device found: no USB serial port is connected", _NO_DEVICE_HINT)
    if len(ports) > 1:
        listed = "\n".join(f"  {p}" for p in ports)
        raise NoDevice(
            f"several devices found, and no --port to choose one:\n{listed}",
            f"Pass --port with one of them, e.g. --port {ports[0].device}.",
        )
    return ports[0].device


# -- the device side: helpers sent once per connection, run in the raw REPL --------------------------------

# MicroPython. Names start with _nt_ so that they stay out of the way of anything at the REPL.
DEVICE_HELPERS = r"""
import os, sys, gc, json, hashlib, binascii
_nt_buf = bytearray(1024)
def _nt_sync():
    s = getattr(os, 'sync', None)
    if s:
        s()
def _nt_hash(p):
    h = hashlib.sha256()
    n = 0
    with open(p, 'rb') as f:
        while True:
            k = f.readinto(_nt_buf)
            if not k:
                break
            h.update(_nt_buf if k == 1024 else memoryview(_nt_buf)[:k])
            n += k
    return [n, binascii.hexlify(h.digest()).decode()]
def _nt_tree(d):
    out = {}
    todo = ['']
    while todo:
        sub = todo.pop()
        for e in os.ilistdir((d + '/' + sub).rstrip('/')):
            rel = sub + e[0]
            if e[1] & 0x4000:
                todo.append(rel + '/')
            else:
                out[rel] = _nt_hash(d + '/' + rel)
    return out
def _nt_read(p):
    try:
        with open(p) as f:
            return f.read()
    except OSError:
        return None
def _nt_scan(slots):
    impl = sys.implementation
    root = {}
    for e in os.ilistdir('/'):
        root[e[0]] = 'd' if e[1] & 0x4000 else 'f'
    r = {'platform': sys.platform, 'version': list(impl.version)[:3], 'mpy': getattr(impl, '_mpy', 0),
         'machine': getattr(impl, '_machine', ''), 'vfs': list(os.statvfs('/')), 'root': root,
         'pointer': _nt_read('/nt_app'), 'stubs': {}, 'slots': {}, 'manifests': {}}
    for n in ('boot.py', 'main.py'):
        if root.get(n) == 'f':
            r['stubs'][n] = _nt_hash('/' + n)
    for s in slots:
        r['slots'][s] = _nt_tree('/' + s) if root.get(s) == 'd' else None
        r['manifests'][s] = _nt_read('/' + s + '/manifest.json') if root.get(s) == 'd' else None
    print(json.dumps(r))
def _nt_hashes(paths):
    r = {}
    for p in paths:
        try:
            r[p] = _nt_hash(p)
        except OSError:
            r[p] = None
    print(json.dumps(r))
def _nt_mkdirs(p):
    q = ''
    for part in p.strip('/').split('/'):
        q += '/' + part
        try:
            os.mkdir(q)
        except OSError:
            pass
def _nt_open(p):
    global _nt_f
    _nt_f = open(p, 'wb')
def _nt_w(s):
    _nt_f.write(binascii.a2b_base64(s))
def _nt_close():
    _nt_f.close()
    _nt_sync()
def _nt_copy(a, b):
    with open(a, 'rb') as fa:
        with open(b, 'wb') as fb:
            while True:
                k = fa.readinto(_nt_buf)
                if not k:
                    break
                fb.write(_nt_buf if k == 1024 else memoryview(_nt_buf)[:k])
    _nt_sync()
def _nt_rm(p):
    try:
        os.remove(p)
    except OSError:
        pass
def _nt_rmtree(p):
    try:
        entries = list(os.ilistdir(p))
    except OSError:
        return
    for e in entries:
        q = p + '/' + e[0]
        if e[1] & 0x4000:
            _nt_rmtree(q)
        else:
            os.remove(q)
    os.rmdir(p)
def _nt_replace(a, b):
    _nt_sync()
    try:
        os.rename(a, b)
    except OSError:
        os.remove(b)
        os.rename(a, b)
    _nt_sync()
"""


# -- the boot banner ------------------------------------------------------------------------------------


@dataclass
class Boot:
    """What the firmware printed when it started: its banner, parsed, and the lines before it."""

    banner: str
    version: str
    fields: dict[str, str]
    lines: list[str] = field(default_factory=list)

    @property
    def sensors(self) -> dict[str, str]:
        return {k: self.fields[k] for k in ("imu", "hall_a", "hall_b") if k in self.fields}

    @property
    def self_test_ok(self) -> bool:
        return bool(self.sensors) and all(v == "ok" for v in self.sensors.values())


def parse_banner(line: str) -> Boot | None:
    found = _BANNER.search(line.strip())
    if not found:
        return None
    fields = dict(kv.split("=", 1) for kv in found.group(2).split())
    return Boot(found.group(0), found.group(1), fields)


# -- the connection -------------------------------------------------------------------------------------


class Repl:
    """The raw REPL of the MicroPython board on `port`, with the helpers loaded. Use as a context manager."""

    def __init__(self, port: str, *, soft_reset: bool = True, timeout_s: float = 10.0) -> None:
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        self.port = port
        self.timeout_s = timeout_s
        self._error = TransportError
        self._seen = b""  # the last of what the board showed while the raw REPL was being entered
        try:
            # A read timeout, so that a silent line ends in an error instead of a hang (on a pty mpremote
            # reads without one).
            self.t = SerialTransport(port, baudrate=115200, timeout=0.5)
        except TransportError:
            raise PortUnavailable(
                f"cannot open {port}",
                "Another program may hold it (a `mpremote repl`, a viewer, a serial monitor): close it. On "
                "Linux, the user needs access to serial ports (the dialout group).",
            ) from None
        self.enter(soft_reset)

    def __enter__(self) -> Repl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enter(self, soft_reset: bool = True) -> None:
        """(Re-)enter the raw REPL, soft-resetting the board first unless told not to; load the helpers."""
        try:
            self._enter_raw(soft_reset)
        except (OSError, LinkLost) as e:
            self.close()
            seen = self._seen[-300:].decode(errors="replace").strip()
            running = b"NT1 " in self._seen or BANNER_PREFIX.encode() in self._seen
            if running:
                hint = ("The NeedleTrack firmware is running but did not stop for Ctrl-C: reset the board "
                        "(its reset button, or unplug it) and run the command again.")
            else:
                hint = ("Install MicroPython on the board first (docs/flashing.md: esptool for ESP32-S3, "
                        "the UF2 file for Pico W). A board held in its bootloader (BOOT pressed at reset) "
                        "shows as a port without a REPL: reset it. If this is another kind of serial device, "
                        "pass --port with the board's.")
            why = e.message if isinstance(e, LinkLost) else str(e)
            raise NotMicroPython(
                f"{self.port} does not answer as a MicroPython REPL ({why})"
                + (f"; it showed: {seen!r}" if seen else ""),
                hint,
            ) from None
        try:
            self.exec(DEVICE_HELPERS)
        except LinkLost:
            self.close()
            raise
        except DeviceError as e:
            self.close()
            raise Incompatible(
                f"the board's MicroPython lacks what flashing needs: {e.message}",
                "Use a MicroPython build with os, json, hashlib and binascii "
                "(the official builds for ESP32-S3 and Pico W have them).",
            ) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.t.close()

    def _enter_raw(self, soft_reset: bool) -> None:
        # mpremote's own entry sends one Ctrl-C and then waits without an overall limit while output flows; a
        # Ctrl-C can be lost (one that lands while the firmware starts, or in its own Ctrl-C handler), and
        # the firmware then streams on. So: Ctrl-C, a moment for the board to settle, Ctrl-A, and again until
        # the raw REPL answers or the time is up.
        self._seen = b""
        ser = self.t.serial
        deadline = time.monotonic() + self.timeout_s
        while True:
            ser.write(b"\r\x03")
            self._discard(0.25)
            ser.write(b"\r\x01")
            if self._expect(RAW_BANNER, min(deadline, time.monotonic() + 0.8)):
                break
            if time.monotonic() >= deadline:
                raise LinkLost(f"no raw REPL within {self.timeout_s:g} s")
        if soft_reset:
            # As mpremote does: the board soft-resets and runs boot.py (the watchdog keeper), not main.py.
            ser.write(b"\x04")
            if not (self._expect(b"soft reboot\r\n", deadline) and self._expect(RAW_BANNER, deadline)):
                raise LinkLost("no raw REPL after the soft reset")
        self.t.in_raw_repl = True  # the raw prompt's ">" stays unread: mpremote's exec waits for it

    def _discard(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ser = self.t.serial
            n = ser.in_waiting
            if n:
                self._seen = (self._seen + ser.read(n))[-4096:]
            else:
                time.sleep(0.01)

    def _expect(self, pattern: bytes, deadline: float) -> bool:
        # Byte by byte, so that nothing after the pattern is consumed.
        ser = self.t.serial
        got = b""
        while time.monotonic() < deadline:
            if ser.in_waiting:
                got += ser.read(1)
                if got.endswith(pattern):
                    self._seen = (self._seen + got)[-4096:]
                    return True
            else:
                time.sleep(0.005)
        self._seen = (self._seen + got)[-4096:]
        return False

    def exec(self, code: str, timeout_s: float | None = None) -> str:
        """Run code in the raw REPL; returns what it printed. A device-side exception is a DeviceError."""
        try:
            out, err = self.t.exec_raw(code, timeout=timeout_s or self.timeout_s)
        except (self._error, OSError) as e:
            raise LinkLost(
                f"the link to {self.port} failed: {e}",
                "Check the cable and run the command again: an interrupted flash leaves the "
                "previous firmware in place.",
            ) from None
        if err:
            text = err.decode(errors="replace").strip()
            raise DeviceError(text.splitlines()[-1] if text else "error", text)
        return out.decode(errors="replace")

    def call(self, code: str, timeout_s: float | None = None) -> Any:
        """Run code that prints one JSON document; returns it decoded."""
        out = self.exec(code, timeout_s).strip()
        try:
            return json.loads(out.splitlines()[-1])
        except (ValueError, IndexError):
            raise LinkLost(
                f"unexpected answer from {self.port}: {out[-200:]!r}",
                "Run the command again; if it persists, reset the board.",
            ) from None

    def restart(self, timeout_s: float = 20.0) -> Boot:
        """Leave the raw REPL and soft-reset into the firmware; returns its boot banner.

        Raises FirmwareDidNotStart (with the traceback or the lines seen) if no banner comes in time.
        """
        self.t.exit_raw_repl()
        self._read_until(b">>> ", 5.0)
        self.t.serial.write(b"\x04")  # Ctrl-D at the friendly prompt: soft reboot, boot.py then main.py
        lines: list[str] = []
        pending = b""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            chunk = self._read_some()
            if not chunk:
                continue
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                text = raw.decode(errors="replace").rstrip("\r")
                boot = parse_banner(text) if BANNER_PREFIX in text else None
                if boot is not None:
                    boot.lines = lines
                    return boot
                if not text.startswith("NT1 "):
                    lines.append(text)
            if pending.endswith(b">>> ") and any("Traceback" in x for x in lines):
                break  # the firmware stopped with an error and the REPL took over
        shown = "\n".join(x for x in lines if x.strip())[-2000:]
        raise FirmwareDidNotStart(
            f"the firmware did not print its boot banner within {timeout_s:g} s",
            f"The board showed:\n{shown}" if shown else "The board showed nothing.",
        )

    def _read_some(self) -> bytes:
        ser = self.t.serial
        try:
            n = ser.in_waiting
            return ser.read(n if n else 1)
        except OSError as e:
            raise LinkLost(f"the link to {self.port} failed: {e}", "Check the cable.") from None

    def _read_until(self, ending: bytes, timeout_s: float) -> bytes:
        seen = b""
        end = time.monotonic() + timeout_s
        while ending not in seen:
            if time.monotonic() > end:
                raise LinkLost(
                    f"no {ending!r} from {self.port} within {timeout_s:g} s: {seen[-200:]!r}",
                    "Reset the board and run the command again.",
                )
            seen += self._read_some()
        return seen
