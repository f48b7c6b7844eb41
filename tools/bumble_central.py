"""MicroPython's `bluetooth` module on a Bumble host, in CPython: the central side of a multitest.

MicroPython's two-instance BLE tests (tests/multi_bluetooth in its repository) run one instance as a peripheral
and the other as a central. ``tools/multi_bluetooth.py`` runs the peripheral on the virtual probe's `bluetooth`
stand-in and the central here: the test's ``instance1()`` runs in CPython, and its ``import bluetooth, time,
machine`` and ``from micropython import const`` get the modules of this file instead of CPython's own.

    python tools/bumble_central.py TRANSPORT SCRIPT

runs SCRIPT (a test file with the multitest helpers appended, as the runner writes it) against a Bumble device
on the HCI transport TRANSPORT (the radio bridge's ``tcp-client:127.0.0.1:PORT``).

What is modelled, after MicroPython's extmod/modbluetooth.c and extmod/nimble/modbluetooth_nimble.c (a NimBLE
board such as an ESP32, the stack MicroPython's own multitest runs are made on):

- IRQs: the handler given to ``BLE.irq`` runs on its own thread, one event at a time in the order the stack
  raised them, interleaved with the application's code at any point, as NimBLE's host task calls into the VM on
  an ESP32. An exception in the handler prints "Unhandled exception in IRQ callback handler" and disables the
  handler, as the board's synchronous-event binding does.
- Event data: MicroPython's tuples, with memoryviews for addresses and payloads; ``_IRQ_ENCRYPTION_UPDATE``
  carries ints; GATT client statuses are NimBLE's (0 on success, 0x100 + the ATT error code).
- Scanning reports every advertising PDU (no duplicate filtering) with its legacy PDU type (ADV_IND 0,
  ADV_DIRECT_IND 1, ADV_SCAN_IND 2, ADV_NONCONN_IND 3, SCAN_RSP 4), then ``_IRQ_SCAN_DONE``.
- Characteristic discovery reports each characteristic with its end handle (the next declaration less one, or
  the end of the range), descriptor discovery runs Find Information from start + 1, as NimBLE does.
- Writes and notifications are cut to ATT_MTU - 3 by the stack. MTU exchange: ``config(mtu=)`` (default 256) is
  offered by ``gattc_exchange_mtu`` and answered to a peer's request; ``_IRQ_MTU_EXCHANGED`` either way.
- Pairing: ``config(bond=, mitm=, le_secure=, io=)`` and ``gap_pair``; ``_IRQ_ENCRYPTION_UPDATE`` when pairing
  ends; ``_IRQ_PASSKEY_ACTION`` and ``gap_passkey`` for the I/O capabilities that need them.
- A GATT server (``gatts_*``) for tests whose central also serves (perf_gatt_notify).

Not modelled: advertising from this side, L2CAP channels, ``rxbuf`` (NimBLE has none: ValueError).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import concurrent.futures
import contextlib
import errno
import logging
import queue
import struct
import sys
import threading
import time as _time
import traceback
import types
from collections.abc import Callable, Coroutine
from typing import Any

from bumble import att, core, hci
from bumble.device import Connection, Device, DeviceConfiguration
from bumble.gatt import (
    GATT_APPEARANCE_CHARACTERISTIC,
    GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
    GATT_DEVICE_NAME_CHARACTERISTIC,
    GATT_GENERIC_ACCESS_SERVICE,
    GATT_GENERIC_ATTRIBUTE_SERVICE,
    GATT_SERVICE_CHANGED_CHARACTERISTIC,
    Characteristic,
    CharacteristicValue,
    Descriptor,
    Service,
)
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport import open_transport

from needletrack.sim import att_discovery
from needletrack.sim import radio as bridge  # MicroPython's characteristic flags, FLAG_*, as the bridge reads them
from needletrack.sim.radio import FLAG_INDICATE, FLAG_NOTIFY

logging.getLogger("bumble").setLevel(logging.CRITICAL)


_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_GATTS_READ_REQUEST = 4
_IRQ_SCAN_RESULT = 5
_IRQ_SCAN_DONE = 6
_IRQ_PERIPHERAL_CONNECT = 7
_IRQ_PERIPHERAL_DISCONNECT = 8
_IRQ_GATTC_SERVICE_RESULT = 9
_IRQ_GATTC_SERVICE_DONE = 10
_IRQ_GATTC_CHARACTERISTIC_RESULT = 11
_IRQ_GATTC_CHARACTERISTIC_DONE = 12
_IRQ_GATTC_DESCRIPTOR_RESULT = 13
_IRQ_GATTC_DESCRIPTOR_DONE = 14
_IRQ_GATTC_READ_RESULT = 15
_IRQ_GATTC_READ_DONE = 16
_IRQ_GATTC_WRITE_DONE = 17
_IRQ_GATTC_NOTIFY = 18
_IRQ_GATTC_INDICATE = 19
_IRQ_GATTS_INDICATE_DONE = 20
_IRQ_MTU_EXCHANGED = 21
_IRQ_ENCRYPTION_UPDATE = 28
_IRQ_GET_SECRET = 29
_IRQ_SET_SECRET = 30
_IRQ_PASSKEY_ACTION = 31

_PASSKEY_ACTION_INPUT = 2
_PASSKEY_ACTION_DISPLAY = 3
_PASSKEY_ACTION_NUMERIC_COMPARISON = 4

_BLE_HS_ERR_ATT_BASE = 0x100  # NimBLE reports an ATT error code e as status 0x100 + e
_BLE_HS_ETIMEOUT = 13
_BLE_HS_ENOTCONN = 7
_CONN_HANDLE_NONE = 0xFFFF
_DEFAULT_MTU = 256  # MicroPython's ESP32 NimBLE preferred ATT MTU
_ATT_DEFAULT_MTU = 23
_DEFAULT_ATTR_LEN = 20
_CONNECT_DEFAULT_S = 30.0  # NimBLE's connect duration when none is given
_TX_QUEUE = 12  # packets the stack holds for the controller (NimBLE's mbufs; the bridge's figure too)
_TX_PER_EVENT = 4  # packets sent per connection event at most


_TRANSPORT = [""]  # the HCI transport the BLE object opens (set by main())


# -- micropython, time, machine: the names the tests use ----------------------------------------------------------

_TICKS_PERIOD = 1 << 30
_TICKS_MAX = _TICKS_PERIOD - 1
_T0 = _time.monotonic_ns()


def _ticks(unit_ns: int) -> int:
    return ((_time.monotonic_ns() - _T0) // unit_ns) & _TICKS_MAX


def _ticks_diff(end: int, start: int) -> int:
    return ((end - start + _TICKS_PERIOD // 2) & _TICKS_MAX) - _TICKS_PERIOD // 2


def _module(name: str, **names: Any) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(names)
    return m


time_module = _module(
    "time",
    ticks_ms=lambda: _ticks(1_000_000),
    ticks_us=lambda: _ticks(1_000),
    ticks_cpu=lambda: _ticks(1_000),
    ticks_diff=_ticks_diff,
    ticks_add=lambda t, d: (t + d) & _TICKS_MAX,
    sleep=_time.sleep,
    sleep_ms=lambda ms: _time.sleep(max(0, ms) / 1000),
    sleep_us=lambda us: _time.sleep(max(0, us) / 1_000_000),
    time=lambda: int(_time.time()),
    time_ns=_time.time_ns,
    localtime=_time.localtime,
    gmtime=_time.gmtime,
    mktime=_time.mktime,
)


def _idle() -> None:
    # A board's idle() waits for the next interrupt: at most a tick of its scheduler.
    _time.sleep(0.0005)


def _deepsleep(time_ms: int | None = None) -> None:
    raise SystemExit("deepsleep: not modelled on the central")


machine_module = _module(
    "machine", idle=_idle, deepsleep=_deepsleep, lightsleep=lambda time_ms=None: _time.sleep((time_ms or 0) / 1000),
    unique_id=lambda: b"\x00\x1b\xdc\x00\x00\x02", freq=lambda *a: 240_000_000, reset=_deepsleep,
    soft_reset=_deepsleep, disable_irq=lambda: 0, enable_irq=lambda state=0: None,
)

micropython_module = _module(
    "micropython", const=lambda x: x, native=lambda f: f, viper=lambda f: f, opt_level=lambda *a: 0,
    schedule=lambda fn, arg: fn(arg), heap_lock=lambda: 0, heap_unlock=lambda: 0, alloc_emergency_exception_buf=
    lambda n: None, mem_info=lambda *a: None, qstr_info=lambda *a: None, stack_use=lambda: 0,
    kbd_intr=lambda c: None,
)


# -- bluetooth.UUID --------------------------------------------------------------------------------------------

class UUID:
    """bluetooth.UUID: an int (16-bit), a 2/4/16-byte buffer (little-endian), or a 128-bit string."""

    def __init__(self, value: Any) -> None:
        if isinstance(value, UUID):
            self._d: bytes = value._d
            return
        if isinstance(value, int):
            if not 0 <= value <= 0xFFFF:
                raise ValueError("invalid UUID")
            self._d = struct.pack("<H", value)
            return
        if isinstance(value, str):
            digits = value.replace("-", "")
            if len(digits) > 32:
                raise ValueError("UUID too long")
            if len(digits) < 32:
                raise ValueError("UUID too short")
            try:
                self._d = bytes.fromhex(digits)[::-1]
            except ValueError:
                raise ValueError("invalid char in UUID") from None
            return
        data = bytes(value)
        if len(data) not in (2, 4, 16):
            raise ValueError("invalid UUID")
        self._d = data

    def __bytes__(self) -> bytes:
        return self._d

    def __len__(self) -> int:
        return len(self._d)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UUID) and self._d == other._d

    def __hash__(self) -> int:
        return hash(self._d)

    def __repr__(self) -> str:
        if len(self._d) <= 4:
            return f"UUID(0x{self._d[::-1].hex()})"
        h = self._d[::-1].hex()
        return f"UUID('{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}')"

    def _bumble(self) -> core.UUID:
        return core.UUID.from_bytes(self._d)


def _uuid_of(b: bytes) -> UUID:
    return UUID(bytes(b))


# -- the stack ----------------------------------------------------------------------------------------------------

class _Irqs:
    """Events from the stack to the application's handler, on a thread of their own (NimBLE's host task)."""

    def __init__(self) -> None:
        self.handler: Callable[[int, tuple[Any, ...]], Any] | None = None
        self.queue: queue.Queue[tuple[int, tuple[Any, ...], concurrent.futures.Future[Any] | None]] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="ble-irq", daemon=True)
        self.thread.start()

    def post(self, event: int, data: tuple[Any, ...], want_result: bool = False) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.queue.put((event, data, future if want_result else None))
        return future

    def _run(self) -> None:
        while True:
            event, data, future = self.queue.get()
            result = None
            handler = self.handler
            if handler is not None:
                try:
                    result = handler(event, data)
                except BaseException:
                    _print_locked("Unhandled exception in IRQ callback handler")
                    _print_locked(traceback.format_exc().rstrip())
                    self.handler = None
            if future is not None:
                future.set_result(result)
            self.queue.task_done()

    def wait_idle(self, timeout: float) -> None:
        # Until every event raised so far has been handled (or timeout seconds).
        limit = _time.monotonic() + timeout
        while self.queue.unfinished_tasks and _time.monotonic() < limit:
            _time.sleep(0.005)


_print_lock = threading.RLock()


def _print_locked(*args: Any, **kw: Any) -> None:
    # One print is one write, so lines of the application and of its IRQ handler never interleave. A memoryview
    # prints as MicroPython prints it.
    sep = kw.pop("sep", " ")
    end = kw.pop("end", "\n")
    file = kw.pop("file", None) or sys.stdout
    flush = kw.pop("flush", False)
    with _print_lock:
        file.write(sep.join("<memoryview>" if isinstance(a, memoryview) else str(a) for a in args) + end)
        if flush or file is sys.stdout:
            file.flush()


class _Delegate(PairingDelegate):
    """Pairing decisions taken by the application: _IRQ_PASSKEY_ACTION, answered with gap_passkey()."""

    def __init__(self, ble: BLE, connection: Connection, io: int) -> None:
        super().__init__(io_capability=PairingDelegate.IoCapability(io))
        self.ble = ble
        self.connection = connection

    async def accept(self) -> bool:
        return True

    async def confirm(self, auto: bool = False) -> bool:
        return True

    async def compare_numbers(self, number: int, digits: int) -> bool:
        return bool(await self.ble._passkey_action(self.connection, _PASSKEY_ACTION_NUMERIC_COMPARISON, number))

    async def get_number(self) -> int | None:
        return await self.ble._passkey_action(self.connection, _PASSKEY_ACTION_INPUT, 0)

    async def generate_passkey(self) -> int:
        answer = await self.ble._passkey_action(self.connection, _PASSKEY_ACTION_DISPLAY, 0)
        return 0 if answer is None else int(answer)

    async def display_number(self, number: int, digits: int) -> None:
        return None


class _Entry:
    # A value of the local GATT database: a buffer of `alloc` bytes holding `n` (MicroPython's gatts_db entry).
    def __init__(self) -> None:
        self.data = bytearray(_DEFAULT_ATTR_LEN)
        self.n = 0
        self.append = False

    def value(self) -> bytes:
        return bytes(self.data[: self.n])

    def set(self, value: bytes) -> None:
        if len(value) > len(self.data):
            self.data = bytearray(len(value))
        self.data[: len(value)] = value
        self.n = len(value)

    def remote_write(self, value: bytes) -> None:
        start = self.n if self.append else 0
        n = min(len(self.data), start + len(value))
        self.data[start:n] = value[: n - start]
        self.n = n


class BLE:
    """bluetooth.BLE(): the singleton radio, central and GATT client, on a Bumble device."""

    _it: BLE | None = None

    def __new__(cls) -> BLE:
        if BLE._it is None:
            it = object.__new__(cls)
            it._setup()
            BLE._it = it
        return BLE._it

    def _setup(self) -> None:
        self._irqs = _Irqs()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ble-stack", daemon=True)
        self._thread.start()
        self._device: Device | None = None
        self._transport: Any = None
        self._conns: dict[int, Connection] = {}
        self._mtu = _DEFAULT_MTU
        self._gap_name = b"MPY NIMBLE"
        self._sec = {"bond": False, "mitm": False, "le_secure": False, "io": 3}
        self._passkeys: dict[int, asyncio.Future[Any]] = {}
        self._scan_task: asyncio.Task[None] | None = None
        self._connecting = False
        self._db: dict[int, _Entry] = {}
        self._pairing: set[int] = set()
        self._tx: dict[int, collections.deque[bytes]] = {}  # per connection: ATT PDUs waiting for the link
        self._tx_running: set[int] = set()
        self._tx_lock = threading.Lock()
        self._conn_t0: dict[int, float] = {}  # loop time each connection opened: its connection events' grid

    # -- plumbing
    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        def start() -> None:
            task = self._loop.create_task(coro)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

        self._loop.call_soon_threadsafe(start)

    def _irq(self, event: int, *data: Any) -> None:
        if self._device is not None:  # after active(False) the stack raises nothing more
            self._irqs.post(event, tuple(data))

    def _check(self) -> Device:
        if self._device is None:
            raise OSError(errno.EPERM)  # MicroPython: ERRNO_BLUETOOTH_NOT_ACTIVE
        return self._device

    def _conn(self, conn_handle: int) -> Connection:
        self._check()
        c = self._conns.get(conn_handle)
        if c is None:
            raise OSError(errno.ENOTCONN)
        return c

    # -- configuration
    def active(self, *args: Any) -> bool:
        if args:
            on = bool(args[0])
            if on and self._device is None:
                self._run(self._power_on(), 15.0)
            elif not on and self._device is not None:
                self._run(self._power_off(), 15.0)
        return self._device is not None

    async def _power_on(self) -> None:
        self._transport = await open_transport(_TRANSPORT[0])
        config = DeviceConfiguration(name=self._gap_name.decode(errors="replace"),
                                     address=hci.Address.generate_static_address(), gap_service_enabled=False,
                                     gatt_service_enabled=False)
        device = Device.from_config_with_hci(config, self._transport.source, self._transport.sink)
        device.gatt_server.max_mtu = self._mtu
        self._reset_table(device)
        device.pairing_config_factory = self._pairing_config
        device.host.on("advertising_report", self._on_report)
        device.on(device.EVENT_CONNECTION, self._on_connection)
        await device.power_on()
        self._device = device
        self._db = {}

    async def _power_off(self) -> None:
        device = self._device
        self._device = None
        if device is None:
            return
        if self._scan_task is not None:
            self._scan_task.cancel()
        for c in list(self._conns.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.disconnect(), 2.0)
        self._conns.clear()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(device.power_off(), 2.0)
        with contextlib.suppress(Exception):
            await self._transport.close()

    def config(self, *args: Any, **kw: Any) -> Any:
        if not kw:
            if len(args) != 1:
                raise TypeError("must query one param")
            name = args[0]
            if name == "mac":
                device = self._check()
                return (0, bytes(device.public_address)[::-1])
            if name == "gap_name":
                return self._gap_name
            if name == "mtu":
                return self._mtu
            if name in ("bond", "mitm", "le_secure", "io"):
                return self._sec[name]
            raise ValueError("unknown config param")
        if args:
            raise TypeError("can't specify pos and kw args")
        for name, value in kw.items():
            if name == "gap_name":
                self._gap_name = value.encode() if isinstance(value, str) else bytes(value)
            elif name == "mtu":
                if not _ATT_DEFAULT_MTU <= value <= 527:
                    raise OSError(errno.EINVAL)
                self._mtu = value
                if self._device is not None:
                    self._device.gatt_server.max_mtu = value
            elif name in ("bond", "mitm", "le_secure"):
                self._sec[name] = bool(value)
            elif name == "io":
                self._sec[name] = int(value)
            elif name == "addr_mode":
                pass  # the central keeps its public address
            else:
                raise ValueError("unknown config param")  # rxbuf: NimBLE has none
        return None

    def irq(self, handler: Callable[[int, tuple[Any, ...]], Any] | None) -> None:
        if handler is not None and not callable(handler):
            raise ValueError("invalid handler")
        self._irqs.handler = handler

    # -- GAP: scanning
    def gap_scan(self, duration_ms: int | None, interval_us: int = 1_280_000, window_us: int = 11_250,
                 active: bool = False) -> None:
        self._check()
        if duration_ms is None:
            self._run(self._scan_stop())
            return
        self._run(self._scan_start(duration_ms, interval_us, window_us, active))

    async def _scan_start(self, duration_ms: int, interval_us: int, window_us: int, active: bool) -> None:
        device = self._check()
        if self._scan_task is not None:
            raise OSError(errno.EALREADY)
        interval = min(10240.0, max(2.5, interval_us / 1000))
        window = min(interval, max(2.5, window_us / 1000))
        await device.start_scanning(legacy=True, active=bool(active), scan_interval=interval, scan_window=window,
                                    own_address_type=hci.OwnAddressType.PUBLIC, filter_duplicates=False)
        self._scan_task = asyncio.get_running_loop().create_task(self._scan_for(duration_ms))

    async def _scan_for(self, duration_ms: int) -> None:
        if duration_ms <= 0:
            return  # until gap_scan(None)
        await asyncio.sleep(duration_ms / 1000)
        self._scan_task = None
        device = self._device
        if device is not None:
            with contextlib.suppress(Exception):
                await device.stop_scanning()
            self._irq(_IRQ_SCAN_DONE)

    async def _scan_stop(self) -> None:
        task = self._scan_task
        if task is None:
            return
        self._scan_task = None
        task.cancel()
        device = self._device
        if device is not None:
            with contextlib.suppress(Exception):
                await device.stop_scanning()
        self._irq(_IRQ_SCAN_DONE)

    def _on_report(self, report: Any) -> None:
        if self._scan_task is None:
            return
        event_type = int(report.event_type)
        if hasattr(report, "primary_phy"):  # an extended report: its event type is a bit field
            if event_type & 0x08:
                event_type = 4  # SCAN_RSP
            elif event_type & 0x04:
                event_type = 1  # ADV_DIRECT_IND
            elif event_type & 0x01:
                event_type = 0  # ADV_IND
            elif event_type & 0x02:
                event_type = 2  # ADV_SCAN_IND
            else:
                event_type = 3  # ADV_NONCONN_IND
        address = report.address
        self._irq(_IRQ_SCAN_RESULT, 0 if address.is_public else 1, memoryview(bytes(address)[::-1]), event_type,
                  int(report.rssi), memoryview(bytes(report.data)))

    # -- GAP: connections
    def gap_connect(self, addr_type: int, addr: Any, scan_duration_ms: int = 2000,
                    min_conn_interval_us: int | None = None, max_conn_interval_us: int | None = None) -> None:
        device = self._check()
        if self._connecting:
            raise OSError(errno.EALREADY)
        raw = bytes(addr)
        if len(raw) != 6:
            raise ValueError("invalid addr")
        kind = hci.Address.PUBLIC_DEVICE_ADDRESS if addr_type == 0 else hci.Address.RANDOM_DEVICE_ADDRESS
        address = hci.Address(raw[::-1], kind)
        self._connecting = True
        timeout = scan_duration_ms / 1000 if scan_duration_ms else _CONNECT_DEFAULT_S
        self._spawn(self._connect(device, address, timeout))

    async def _connect(self, device: Device, address: hci.Address, timeout: float) -> None:
        try:
            if self._scan_task is not None:
                await self._scan_stop()
            await device.connect(address, own_address_type=hci.OwnAddressType.PUBLIC, timeout=timeout)
        except Exception:
            self._irq(_IRQ_PERIPHERAL_DISCONNECT, _CONN_HANDLE_NONE, 0xFF, memoryview(bytes(6)))
        finally:
            self._connecting = False

    def gap_disconnect(self, conn_handle: int) -> bool:
        self._check()
        c = self._conns.get(conn_handle)
        if c is None:
            return False
        self._spawn(c.disconnect(hci.HCI_REMOTE_USER_TERMINATED_CONNECTION_ERROR))
        return True

    def _on_connection(self, connection: Connection) -> None:
        handle = connection.handle
        self._conns[handle] = connection
        self._conn_t0[handle] = asyncio.get_running_loop().time()
        peer = connection.peer_address
        addr_type = 0 if peer.is_public else 1
        addr = bytes(peer)[::-1]
        central = connection.role == hci.Role.CENTRAL
        self._irq(_IRQ_PERIPHERAL_CONNECT if central else _IRQ_CENTRAL_CONNECT, handle, addr_type, memoryview(addr))

        def on_disconnection(reason: int) -> None:
            self._conns.pop(handle, None)
            with self._tx_lock:
                self._tx.pop(handle, None)
            future = self._passkeys.pop(handle, None)
            if future is not None and not future.done():
                future.set_result(None)
            if self._device is None:
                return  # active(False): NimBLE has stopped, no more events
            self._irq(_IRQ_PERIPHERAL_DISCONNECT if central else _IRQ_CENTRAL_DISCONNECT, handle, addr_type,
                      memoryview(addr))

        def on_mtu() -> None:
            self._irq(_IRQ_MTU_EXCHANGED, handle, connection.att_mtu)

        def on_pairing_start() -> None:
            self._pairing.add(handle)

        def on_pairing(keys: Any) -> None:
            self._pairing.discard(handle)
            self._spawn(self._pairing_done(connection, keys))

        def on_pairing_failure(reason: int) -> None:
            self._pairing.discard(handle)
            self._encryption_update(connection, False, False)

        def on_encryption_change(*_: Any) -> None:
            if handle not in self._pairing:
                self._encryption_update(connection, bool(self._sec["bond"]), bool(connection.authenticated))

        connection.on(connection.EVENT_DISCONNECTION, on_disconnection)
        connection.on(connection.EVENT_CONNECTION_ATT_MTU_UPDATE, on_mtu)
        connection.on(connection.EVENT_PAIRING_START, on_pairing_start)
        connection.on(connection.EVENT_PAIRING, on_pairing)
        connection.on(connection.EVENT_PAIRING_FAILURE, on_pairing_failure)
        connection.on(connection.EVENT_CONNECTION_ENCRYPTION_CHANGE, on_encryption_change)
        client = connection.gatt_client

        def on_notification(pdu: att.ATT_Handle_Value_Notification) -> None:
            self._irq(_IRQ_GATTC_NOTIFY, handle, pdu.attribute_handle, memoryview(bytes(pdu.attribute_value)))

        def on_indication(pdu: att.ATT_Handle_Value_Indication) -> None:
            self._irq(_IRQ_GATTC_INDICATE, handle, pdu.attribute_handle, memoryview(bytes(pdu.attribute_value)))
            client.send_confirmation(att.ATT_Handle_Value_Confirmation())

        client.on_att_handle_value_notification = on_notification  # type: ignore[method-assign,assignment]
        client.on_att_handle_value_indication = on_indication  # type: ignore[method-assign,assignment]

    # -- pairing
    def _pairing_config(self, connection: Connection) -> PairingConfig:
        s = self._sec
        return PairingConfig(sc=bool(s["le_secure"]), mitm=bool(s["mitm"]), bonding=bool(s["bond"]),
                             delegate=_Delegate(self, connection, int(s["io"])),
                             identity_address_type=PairingConfig.AddressType.PUBLIC)

    async def _pairing_done(self, connection: Connection, keys: Any) -> None:
        bonded = False
        if self._sec["bond"] and keys is not None and (keys.ltk is not None or keys.ltk_peripheral is not None):
            # NimBLE persists the bond through the application's _IRQ_SET_SECRET; a refusal leaves it unbonded.
            peer = connection.peer_address
            key = bytes((0 if peer.is_public else 1,)) + bytes(peer)
            answer = await asyncio.wrap_future(self._irqs.post(_IRQ_SET_SECRET, (2, memoryview(key), memoryview(
                repr(keys.to_dict()).encode())), want_result=True))
            bonded = bool(answer)
        # Authenticated: the key came from a pairing with MITM protection (passkey or numeric comparison).
        ltks = [k for k in (keys.ltk, keys.ltk_central, keys.ltk_peripheral) if k is not None] if keys else []
        self._encryption_update(connection, bonded, any(k.authenticated for k in ltks))

    def _encryption_update(self, connection: Connection, bonded: bool, authenticated: bool) -> None:
        encrypted = bool(connection.encryption)
        authenticated = encrypted and authenticated
        key_size = (connection.encryption_key_size or 16) if encrypted else 0
        self._irq(_IRQ_ENCRYPTION_UPDATE, connection.handle, int(encrypted), int(authenticated),
                  int(encrypted and bonded), key_size)

    async def _passkey_action(self, connection: Connection, action: int, passkey: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._passkeys[connection.handle] = future
        self._irq(_IRQ_PASSKEY_ACTION, connection.handle, action, passkey)
        try:
            return await asyncio.wait_for(future, 30.0)
        except TimeoutError:
            return None
        finally:
            self._passkeys.pop(connection.handle, None)

    def gap_pair(self, conn_handle: int) -> None:
        c = self._conn(conn_handle)
        self._pairing.add(conn_handle)
        self._spawn(self._pair(c))

    async def _pair(self, connection: Connection) -> None:
        with contextlib.suppress(Exception):
            await connection.pair()

    def gap_passkey(self, conn_handle: int, action: int, passkey: int) -> None:
        self._check()
        future = self._passkeys.get(conn_handle)
        if future is None:
            raise OSError(errno.ENOENT)
        def answer() -> None:
            if not future.done():
                future.set_result(passkey)

        self._loop.call_soon_threadsafe(answer)

    # -- the transmit queue: write commands and notifications wait for connection events
    def _transmit(self, c: Connection, pdu: bytes) -> None:
        # NimBLE takes a write without response or a notification into its buffers and sends it at the next
        # connection events, a few per event; with its buffers full the call fails with ENOMEM.
        with self._tx_lock:
            q = self._tx.setdefault(c.handle, collections.deque())
            if len(q) >= _TX_QUEUE:
                raise OSError(errno.ENOMEM)
            q.append(pdu)
            if c.handle in self._tx_running:
                return
            self._tx_running.add(c.handle)
        self._spawn(self._drain(c))

    def _to_next_event(self, c: Connection) -> float:
        # Seconds to the link's next connection event: what the central sends waits for one, as on air.
        interval = (getattr(c.parameters, "connection_interval", 0) or 30.0) / 1000
        now = asyncio.get_running_loop().time()
        start = self._conn_t0.get(c.handle, now)
        return start + (int((now - start) / interval) + 1) * interval - now

    async def _drain(self, c: Connection) -> None:
        try:
            while True:
                await asyncio.sleep(self._to_next_event(c))
                with self._tx_lock:
                    q = self._tx.get(c.handle)
                    batch = [q.popleft() for _ in range(min(_TX_PER_EVENT, len(q)))] if q else []
                    if not batch:
                        self._tx_running.discard(c.handle)
                        return
                device = self._device
                if device is not None and c.handle in self._conns:
                    for pdu in batch:
                        device.send_l2cap_pdu(c.handle, att.ATT_CID, pdu)
        except BaseException:
            with self._tx_lock:
                self._tx_running.discard(c.handle)
            raise

    async def _sent(self, c: Connection) -> None:
        # A request goes after what is already queued, as in NimBLE's single queue to the controller, at the
        # next connection event.
        while c.handle in self._tx_running and c.handle in self._conns:
            await asyncio.sleep(0.001)
        await asyncio.sleep(self._to_next_event(c))

    # -- GATT client
    async def _request(self, connection: Connection, pdu: att.ATT_PDU) -> Any:
        await self._sent(connection)
        return await connection.gatt_client.send_request(pdu)

    def _failed(self, h: int) -> int:
        # A procedure the link took down, or that had no answer: NimBLE's host statuses.
        return _BLE_HS_ENOTCONN if h not in self._conns else _BLE_HS_ETIMEOUT

    @staticmethod
    def _status(response: Any) -> int:
        if response.op_code == att.Opcode.ATT_ERROR_RESPONSE:
            return _BLE_HS_ERR_ATT_BASE + int(response.error_code)
        return 0

    def gattc_discover_services(self, conn_handle: int, uuid: UUID | None = None) -> None:
        c = self._conn(conn_handle)
        self._spawn(self._discover_services(c, uuid))

    async def _discover_services(self, c: Connection, uuid: UUID | None) -> None:
        h = c.handle
        status = 0
        try:
            async for s, e, u in att_discovery.services(lambda pdu: self._request(c, pdu),
                                                        None if uuid is None else bytes(uuid)):
                self._irq(_IRQ_GATTC_SERVICE_RESULT, h, s, e, _uuid_of(u))
        except att_discovery.AttError as e:
            status = _BLE_HS_ERR_ATT_BASE + e.code
        except Exception:
            status = self._failed(h)
        self._irq(_IRQ_GATTC_SERVICE_DONE, h, status)

    def gattc_discover_characteristics(self, conn_handle: int, start_handle: int, end_handle: int,
                                       uuid: UUID | None = None) -> None:
        c = self._conn(conn_handle)
        self._spawn(self._discover_characteristics(c, start_handle, end_handle, uuid))

    async def _discover_characteristics(self, c: Connection, start: int, end: int, uuid: UUID | None) -> None:
        h = c.handle
        status = 0
        try:
            async for last, value_handle, properties, u in att_discovery.characteristics(
                    lambda pdu: self._request(c, pdu), start, end, None if uuid is None else bytes(uuid)):
                self._irq(_IRQ_GATTC_CHARACTERISTIC_RESULT, h, last, value_handle, properties, _uuid_of(u))
        except att_discovery.AttError as e:
            status = _BLE_HS_ERR_ATT_BASE + e.code
        except Exception:
            status = self._failed(h)
        self._irq(_IRQ_GATTC_CHARACTERISTIC_DONE, h, status)

    def gattc_discover_descriptors(self, conn_handle: int, start_handle: int, end_handle: int) -> None:
        c = self._conn(conn_handle)
        self._spawn(self._discover_descriptors(c, start_handle, end_handle))

    async def _discover_descriptors(self, c: Connection, start: int, end: int) -> None:
        h = c.handle
        status = 0
        try:
            async for handle, u in att_discovery.descriptors(lambda pdu: self._request(c, pdu), start, end):
                self._irq(_IRQ_GATTC_DESCRIPTOR_RESULT, h, handle, _uuid_of(u))
        except att_discovery.AttError as e:
            status = _BLE_HS_ERR_ATT_BASE + e.code
        except Exception:
            status = self._failed(h)
        self._irq(_IRQ_GATTC_DESCRIPTOR_DONE, h, status)

    def gattc_read(self, conn_handle: int, value_handle: int) -> None:
        c = self._conn(conn_handle)
        self._spawn(self._read(c, value_handle))

    async def _read(self, c: Connection, value_handle: int) -> None:
        h = c.handle
        try:
            r = await self._request(c, att.ATT_Read_Request(attribute_handle=value_handle))
            status = self._status(r)
            if not status:
                self._irq(_IRQ_GATTC_READ_RESULT, h, value_handle, memoryview(bytes(r.attribute_value)))
        except Exception:
            status = self._failed(h)
        self._irq(_IRQ_GATTC_READ_DONE, h, value_handle, status)

    def gattc_write(self, conn_handle: int, value_handle: int, data: Any, mode: int = 0) -> None:
        c = self._conn(conn_handle)
        value = data.encode() if isinstance(data, str) else bytes(data)
        value = value[: c.att_mtu - 3]  # NimBLE's ATT layer cuts the PDU to the MTU
        if mode == 0:
            self._transmit(c, bytes(att.ATT_Write_Command(attribute_handle=value_handle, attribute_value=value)))
        elif mode == 1:
            self._spawn(self._write(c, value_handle, value))
        else:
            raise OSError(errno.EINVAL)

    async def _write(self, c: Connection, value_handle: int, value: bytes) -> None:
        h = c.handle
        try:
            r = await self._request(c, att.ATT_Write_Request(attribute_handle=value_handle, attribute_value=value))
            status = self._status(r)
        except Exception:
            status = self._failed(h)
        self._irq(_IRQ_GATTC_WRITE_DONE, h, value_handle, status)

    def gattc_exchange_mtu(self, conn_handle: int) -> None:
        c = self._conn(conn_handle)
        self._spawn(self._exchange_mtu(c))

    async def _exchange_mtu(self, c: Connection) -> None:
        await self._sent(c)
        with contextlib.suppress(Exception):
            await c.gatt_client.request_mtu(self._mtu)  # the MTU update event raises _IRQ_MTU_EXCHANGED

    # -- GATT server
    def gatts_register_services(self, services_definition: Any) -> tuple[tuple[int, ...], ...]:
        device = self._check()
        result: tuple[tuple[int, ...], ...] = self._run(self._register(device, services_definition))
        return result

    def _reset_table(self, device: Device) -> None:
        # NimBLE's own services first: GAP 1 (device name 2/3, appearance 4/5), GATT 6 (service changed 7/8 and
        # its CCCD 9); the application's services from handle 10 on.
        server = device.gatt_server
        server.services.clear()
        server.attributes.clear()
        server.attributes_by_handle.clear()
        changed = Characteristic(GATT_SERVICE_CHANGED_CHARACTERISTIC, Characteristic.Properties.INDICATE,
                                 Characteristic.Permissions(0), b"")
        server.add_services([
            Service(GATT_GENERIC_ACCESS_SERVICE, [
                Characteristic(GATT_DEVICE_NAME_CHARACTERISTIC, Characteristic.Properties.READ,
                               Characteristic.Permissions.READABLE,
                               CharacteristicValue(read=lambda _c: self._gap_name)),
                Characteristic(GATT_APPEARANCE_CHARACTERISTIC, Characteristic.Properties.READ,
                               Characteristic.Permissions.READABLE, bytes(2)),
            ]),
            Service(GATT_GENERIC_ATTRIBUTE_SERVICE, [changed]),
        ])

    async def _register(self, device: Device, definition: Any) -> tuple[tuple[int, ...], ...]:
        self._reset_table(device)
        built = []
        order: list[list[Any]] = []
        for service in definition:
            suuid, characteristics = service
            chars = []
            attrs: list[Any] = []
            for ch in characteristics:
                cuuid, flags = ch[0], ch[1]
                descriptors = []
                char = Characteristic(cuuid._bumble(), Characteristic.Properties(flags & 0xFF),
                                      Characteristic.Permissions.READABLE | Characteristic.Permissions.WRITEABLE,
                                      b"")
                attrs.append(char)
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):  # NimBLE: the CCCD right after the value
                    descriptors.append(Descriptor(GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                                                  Descriptor.Permissions.READABLE | Descriptor.Permissions.WRITEABLE,
                                                  device.gatt_server.make_descriptor_value(char)))
                for d in ch[2] if len(ch) > 2 else ():
                    desc = Descriptor(d[0]._bumble(),
                                      Descriptor.Permissions.READABLE | Descriptor.Permissions.WRITEABLE, b"")
                    descriptors.append(desc)
                    attrs.append(desc)
                char.descriptors = descriptors
                chars.append(char)
            built.append(Service(suuid._bumble(), chars))
            order.append(attrs)
        device.gatt_server.add_services(built)
        result = []
        self._db = {}
        for attrs in order:
            handles = []
            for a in attrs:
                handle = a.handle  # a Characteristic is its value attribute; its declaration is another
                entry = _Entry()
                self._db[handle] = entry
                value_attr = device.gatt_server.get_attribute(handle)
                if value_attr is not None:
                    value_attr.value = CharacteristicValue(read=self._server_reader(handle),
                                                           write=self._server_writer(handle))
                handles.append(handle)
            result.append(tuple(handles))
        return tuple(result)

    def _server_reader(self, handle: int) -> Callable[[Connection], Any]:
        async def read(connection: Connection) -> bytes:
            status = await asyncio.wrap_future(self._irqs.post(_IRQ_GATTS_READ_REQUEST, (connection.handle, handle),
                                                                want_result=True))
            if isinstance(status, int) and status:
                raise att.ATT_Error(status)
            return self._db[handle].value()

        return read

    def _server_writer(self, handle: int) -> Callable[[Connection, bytes], None]:
        def write(connection: Connection, value: bytes) -> None:
            self._db[handle].remote_write(bytes(value))
            self._irq(_IRQ_GATTS_WRITE, connection.handle, handle)

        return write

    def gatts_read(self, value_handle: int) -> bytes:
        e = self._db.get(value_handle)
        if e is None:
            raise OSError(errno.EINVAL)
        v = e.value()
        if e.append:
            e.n = 0
        return v

    def gatts_write(self, value_handle: int, data: Any, send_update: bool = False) -> None:
        self._check()
        e = self._db.get(value_handle)
        if e is None:
            raise OSError(errno.EINVAL)
        e.set(data.encode() if isinstance(data, str) else bytes(data))
        if send_update:
            for c in list(self._conns.values()):
                self._spawn(self._update(c, value_handle, e.value()))

    async def _update(self, c: Connection, value_handle: int, value: bytes) -> None:
        await self._sent(c)
        device = self._check()
        attribute = device.gatt_server.get_attribute(value_handle)
        if attribute is not None:
            await device.gatt_server.notify_subscriber(c, attribute, value)

    def gatts_notify(self, conn_handle: int, value_handle: int, data: Any = None) -> None:
        c = self._conn(conn_handle)
        if data is None:
            data = self.gatts_read(value_handle)
        value = (data.encode() if isinstance(data, str) else bytes(data))[: c.att_mtu - 3]
        self._transmit(c, bytes(att.ATT_Handle_Value_Notification(attribute_handle=value_handle,
                                                                  attribute_value=value)))

    def gatts_indicate(self, conn_handle: int, value_handle: int, data: Any = None) -> None:
        c = self._conn(conn_handle)
        if data is None:
            data = self.gatts_read(value_handle)
        value = (data.encode() if isinstance(data, str) else bytes(data))[: c.att_mtu - 3]
        self._spawn(self._indicate(c, value_handle, value))

    async def _indicate(self, c: Connection, value_handle: int, value: bytes) -> None:
        await self._sent(c)
        device = self._check()
        status = 0
        attribute = device.gatt_server.get_attribute(value_handle)
        try:
            if attribute is None:
                raise OSError(errno.EINVAL)
            await device.gatt_server.indicate_subscriber(c, attribute, value, force=True)
        except Exception:
            status = _BLE_HS_ETIMEOUT if c.handle in self._conns else _BLE_HS_ENOTCONN
        self._irq(_IRQ_GATTS_INDICATE_DONE, c.handle, value_handle, status)

    def gatts_set_buffer(self, value_handle: int, len: int, append: bool = False) -> None:
        e = self._db.get(value_handle)
        if e is None:
            raise OSError(errno.EINVAL)
        e.data = bytearray(len)
        e.n = 0
        e.append = bool(append)

    def gap_advertise(self, *args: Any, **kw: Any) -> None:
        raise OSError(errno.EOPNOTSUPP)  # this central does not advertise


bluetooth_module = _module(
    "bluetooth", BLE=BLE, UUID=UUID, **{k: v for k, v in vars(bridge).items() if k.startswith("FLAG_")})

_SHIMS = {"bluetooth": bluetooth_module, "time": time_module, "utime": time_module, "machine": machine_module,
          "micropython": micropython_module}


def _import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
    if level == 0 and name in _SHIMS:
        return _SHIMS[name]
    return builtins.__import__(name, globals, locals, fromlist, level)


class _ByteArray(bytearray):
    """MicroPython's bytearray keeps the low 8 bits of an int stored into it (CPython raises ValueError)."""

    def __setitem__(self, index: Any, value: Any) -> None:
        super().__setitem__(index, value & 0xFF if isinstance(value, int) else value)


def run_script(path: str) -> None:
    """Run a test script as MicroPython would: its imports of the MicroPython modules get the ones above."""
    with open(path) as f:
        source = f.read()
    names = dict(vars(builtins))
    names["__import__"] = _import
    names["print"] = _print_locked
    names["bytearray"] = _ByteArray
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": path, "__builtins__": names}
    exec(compile(source, path, "exec"), namespace)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    _TRANSPORT[0] = argv[0]
    code = 0
    try:
        run_script(argv[1])
    except SystemExit as e:
        code = 0 if e.code is None or (isinstance(e.code, int) and e.code == 0) else 1
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # the test's frames only, as MicroPython would show them
        with _print_lock:
            traceback.print_exception(type(e), e, tb, file=sys.stdout)
            sys.stdout.flush()
        code = 1
    ble = BLE._it
    if ble is not None:
        ble._irqs.wait_idle(1.0)  # what the handler prints for events already raised is part of the output
        with contextlib.suppress(Exception):
            ble.active(False)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main(sys.argv[1:]))
