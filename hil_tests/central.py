"""The host side of the device under test's links, for the BLE, control and persistence families.

``Central`` is one BLE host: a Bumble host on the virtual probe's radio (or on a Bumble transport such as a USB
dongle, ``--ble usb:0``), else the computer's adapter through bleak. It connects, bonds, sends control commands
and waits for the RESULT (and the CONFIG or STATUS record) that answers each one. ``SerialLine`` reads the
device's serial console in the background, for the boot banner.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from needletrack.link import Found, Link, open_link
from needletrack.link.bumble_link import BumbleLink
from needletrack.protocol import (
    STATUS_UUID,
    Config,
    Opcode,
    Record,
    Result,
    Status,
    decode_record,
    encode_command,
)

BANNER_PREFIX = "NeedleTrack "
OS_TRANSPORTS = ("os", "bleak")
DIS_SERIAL_NUMBER = "00002a25-0000-1000-8000-00805f9b34fb"


def is_bumble(transport: str) -> bool:
    """A transport the Bumble host stack drives (the virtual radio, a USB dongle), not the OS adapter."""
    return transport not in OS_TRANSPORTS and not transport.startswith("console:")


async def radio_free(served: Any, timeout: float = 5.0) -> None:
    """Wait until the virtual radio has let the previous host go: it takes one host at a time, and a host that
    just closed its socket may not have been noticed yet."""
    bridge = served.radio.bridge
    async with asyncio.timeout(timeout):
        while bridge.hci_busy:
            await asyncio.sleep(0.02)


class Central:
    """One BLE host connected to one probe. ``transport``: the device under test's ``dut.ble``; ``served``: its
    ``dut.served`` (the virtual probe's handles) or None on a board."""

    def __init__(self, transport: str, served: Any = None, *, mtu: int = 247) -> None:
        self.transport = transport
        self.served = served
        self.mtu = mtu
        self.link: Link = BumbleLink(transport, mtu=mtu) if is_bumble(transport) else open_link(transport)
        self.found: Found | None = None
        self.records: asyncio.Queue[Record] = asyncio.Queue()
        self.malformed: list[bytes] = []
        self._token = 0
        self._subscribed = False
        self.scan_s = 0.0  # how long the last scan took to find the probe

    @classmethod
    def of(cls, dut: Any, *, mtu: int = 247) -> Central:
        return cls(dut.ble, dut.served, mtu=mtu)

    async def __aenter__(self) -> Central:
        if self.served is not None:
            await radio_free(self.served)
        await self.link.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.link.__aexit__(*exc)

    @property
    def bumble(self) -> BumbleLink | None:
        return self.link if isinstance(self.link, BumbleLink) else None

    @property
    def mtu_size(self) -> int:
        bl = self.bumble
        if bl is not None:
            return bl.mtu_size
        return int(self.link.client.mtu_size)  # type: ignore[attr-defined]  # BleakLink

    async def connect(self, address: str | None = None, timeout: float = 10.0) -> Found | None:
        """Find the probe by its service UUID (or go to `address`), connect, and listen to its status records."""
        self._subscribed = False
        if address is None:
            t0 = time.monotonic()
            found = await self.link.scan(timeout, first=True)
            self.scan_s = time.monotonic() - t0
            if not found:
                raise AssertionError(f"no probe advertising the NeedleTrack service within {timeout} s")
            self.found = found[0]
            address = found[0].address
        await self.link.connect(address, timeout=timeout)
        while not self.records.empty():
            self.records.get_nowait()
        await self.link.subscribe(STATUS_UUID, self._on_record)
        self._subscribed = True
        return self.found

    def _on_record(self, data: bytes) -> None:
        try:
            self.records.put_nowait(decode_record(data))
        except ValueError:
            self.malformed.append(bytes(data))

    async def pair(self) -> None:
        await self.link.pair()

    async def read_char(self, uuid: str) -> bytes:
        """Any readable characteristic, by UUID (e.g. Device Information's)."""
        bl = self.bumble
        if bl is not None:
            return await bl.read(uuid)
        return bytes(await self.link.client.read_gatt_char(uuid))  # type: ignore[attr-defined]  # BleakLink

    def next_token(self) -> int:
        self._token = (self._token % 255) + 1
        return self._token

    async def command(self, opcode: Opcode, *args: int, want: type | None = None,
                      timeout: float = 5.0) -> tuple[Result, Record | None]:
        """Send one command; its RESULT and, with `want` (Config, Status), the record that follows an OK."""
        token = self.next_token()
        return await self.send(encode_command(opcode, token, *args), int(opcode), token, want=want,
                               timeout=timeout)

    async def send(self, data: bytes, opcode: int, token: int, *, want: type | None = None,
                   timeout: float = 5.0) -> tuple[Result, Record | None]:
        """Write `data` (any bytes, well formed or not) and wait for the RESULT for (opcode, token)."""
        await self.link.write_control(data)
        result = await self.wait_result(opcode, token, timeout)
        extra: Record | None = None
        if want is not None and result.code == 0:
            async with asyncio.timeout(timeout):
                while not isinstance(extra, want):
                    extra = await self.records.get()
        return result, extra

    async def wait_result(self, opcode: int, token: int, timeout: float = 5.0) -> Result:
        async with asyncio.timeout(timeout):
            while True:
                rec = await self.records.get()
                if isinstance(rec, Result) and (rec.opcode, rec.token) == (opcode, token):
                    return rec

    async def results_within(self, seconds: float) -> list[Result]:
        """Every RESULT that arrives within `seconds` (to show that none did)."""
        got: list[Result] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    rec = await self.records.get()
                    if isinstance(rec, Result):
                        got.append(rec)
        return got

    async def read_config(self) -> Config:
        result, cfg = await self.command(Opcode.READ_CONFIG, want=Config)
        assert result.code == 0 and isinstance(cfg, Config), result
        return cfg

    async def read_status(self) -> Status:
        result, status = await self.command(Opcode.READ_STATUS, want=Status)
        assert result.code == 0 and isinstance(status, Status), result
        return status

    async def disconnect(self) -> None:
        await self.link.disconnect()

    async def wait_disconnected(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.link.is_connected:
                await asyncio.sleep(0.01)


@dataclass(frozen=True)
class ConfigValues:
    """What the control commands set, in command units: apply() sets them (back)."""

    guide_cdeg: int
    needle_dmm: int
    nogo_d10um: int  # protocol NA (-32768): none
    margin_d10um: int
    rate_hz: int

    @classmethod
    def of(cls, cfg: Config) -> ConfigValues:
        nogo = -32768 if cfg.nogo_depth_mm is None else round(cfg.nogo_depth_mm * 100)
        return cls(round(cfg.guide_angle_deg * 100), round(cfg.needle_length_mm * 10), nogo,
                   round(cfg.nogo_margin_mm * 100), cfg.rate_hz)

    async def apply(self, central: Central) -> list[tuple[str, int]]:
        """Set every value (back); returns (command, result code) of each, all 0 when it worked."""
        codes = []
        for op, args in ((Opcode.SET_GUIDE_ANGLE, (self.guide_cdeg,)),
                         (Opcode.SET_NEEDLE_LENGTH, (self.needle_dmm,)),
                         (Opcode.SET_NOGO, (self.nogo_d10um, self.margin_d10um)),
                         (Opcode.SET_OUTPUT_RATE, (self.rate_hz,))):
            result, _ = await central.command(op, *args)
            codes.append((op.name, int(result.code)))
        return codes


class SerialLine:
    """The device's serial console, read in the background: a board's USB port or the virtual probe's terminal.

    A board's USB port goes away while the chip resets; the reader opens it again as soon as it is back.
    """

    def __init__(self, port: str) -> None:
        import serial  # pyserial, installed with mpremote

        self._serial_mod = serial
        self.port = port
        self.lines: list[tuple[float, str]] = []  # (host time.monotonic(), line)
        self._stop = threading.Event()
        self._dev: Any = self._open()
        self._thread = threading.Thread(target=self._read, name="serial-line", daemon=True)
        self._thread.start()

    def _open(self) -> Any:
        return self._serial_mod.Serial(self.port, 115200, timeout=0.05)

    def _read(self) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                if self._dev is None:
                    self._dev = self._open()
                chunk = self._dev.read(4096)
            except (OSError, self._serial_mod.SerialException):
                with contextlib.suppress(Exception):
                    if self._dev is not None:
                        self._dev.close()
                self._dev = None
                self._stop.wait(0.1)
                continue
            if not chunk:
                continue
            pending += chunk
            *done, pending = pending.split(b"\n")
            now = time.monotonic()
            for raw in done:
                text = raw.decode(errors="replace").strip()
                if text and not text.startswith("NT1 "):
                    self.lines.append((now, text))

    def banner(self, after: float, timeout: float = 10.0) -> str:
        """The first boot banner shown after host time `after` (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, text in list(self.lines):
                if t >= after and text.startswith(BANNER_PREFIX):
                    return text
            time.sleep(0.01)
        shown = [text for t, text in self.lines if t >= after][-10:]
        raise AssertionError(f"no boot banner on {self.port} within {timeout} s; the line showed: {shown}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(Exception):
            if self._dev is not None:
                self._dev.close()

    def __enter__(self) -> SerialLine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def banner_fields(banner: str) -> dict[str, str]:
    """``key=value`` words of a boot banner: {"config": "ok", "cal": "d404", ...}."""
    return dict(word.split("=", 1) for word in banner.split() if "=" in word)
