"""Protocol v1 decoding and command encoding (docs/protocol.md is the definition).

Everything malformed raises :class:`ProtocolError`; nothing here returns a partial or guessed value.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

VERSION = 1
SAMPLE_SIZE = 20
NA = -32768
NA32 = -(1 << 31)  # "no value" in a RESULT's i32 (a CAL_RESIDUAL point no fit used)
TICK_PERIOD_US = 1 << 30

SERVICE_UUID = "301b0001-5a5e-487c-b7c0-b53a1d892a59"
MEASUREMENT_UUID = "301b0002-5a5e-487c-b7c0-b53a1d892a59"
CONTROL_UUID = "301b0003-5a5e-487c-b7c0-b53a1d892a59"
STATUS_UUID = "301b0004-5a5e-487c-b7c0-b53a1d892a59"

_SAMPLE = struct.Struct("<HIhhhhhhH")
_STATUS = struct.Struct("<BBBBHHHHHHI")  # version 1
_STATUS_V2 = struct.Struct("<BBBBHHHHHHHBB")  # version 2: uptime u24, then the loop's load
_RESULT = struct.Struct("<BBBBi")
_CONFIG = struct.Struct("<BBhHhHHHBBhH")


class ProtocolError(ValueError):
    """Bytes that are not a valid protocol v1 notification, record or command."""


class Flag(enum.IntFlag):
    IMU_FAULT = 0x0001
    HALL_FAULT = 0x0002
    UNCALIBRATED = 0x0004
    DEPTH_INVALID = 0x0008
    NOGO_NEAR = 0x0010
    NOGO_REACHED = 0x0020
    TWITCH = 0x0040
    STALE = 0x0080
    MOVING = 0x0100
    SETTLING = 0x0200
    PASS = 0x0400
    LOW_BATTERY = 0x0800


FLAG_MASK = 0x0FFF


class Opcode(enum.IntEnum):
    SET_GUIDE_ANGLE = 0x01
    SET_NEEDLE_LENGTH = 0x02
    SET_NOGO = 0x03
    SET_OUTPUT_RATE = 0x04
    TARE = 0x05
    CAL_BEGIN = 0x06
    CAL_POINT = 0x07
    CAL_COMMIT = 0x08
    CAL_ABORT = 0x09
    IDENTIFY = 0x0A
    REBOOT = 0x0B
    READ_CONFIG = 0x0C
    READ_STATUS = 0x0D
    READ_FIELD = 0x0E
    CAL_RESIDUAL = 0x0F


class ResultCode(enum.IntEnum):
    OK = 0
    UNKNOWN_OPCODE = 1
    BAD_LENGTH = 2
    OUT_OF_RANGE = 3
    BAD_STATE = 4
    NOT_PERMITTED = 5
    STORE_FAILED = 6


class DeviceState(enum.IntEnum):
    BOOT = 0
    RUNNING = 1
    CALIBRATING = 2
    FAULT = 3


# Payload layout of each command after the opcode and token bytes.
COMMAND_PAYLOAD: dict[Opcode, str] = {
    Opcode.SET_GUIDE_ANGLE: "h",
    Opcode.SET_NEEDLE_LENGTH: "H",
    Opcode.SET_NOGO: "hH",
    Opcode.SET_OUTPUT_RATE: "H",
    Opcode.TARE: "",
    Opcode.CAL_BEGIN: "",
    Opcode.CAL_POINT: "h",
    Opcode.CAL_COMMIT: "",
    Opcode.CAL_ABORT: "",
    Opcode.IDENTIFY: "B",
    Opcode.REBOOT: "",
    Opcode.READ_CONFIG: "",
    Opcode.READ_STATUS: "",
    Opcode.READ_FIELD: "B",
    Opcode.CAL_RESIDUAL: "B",
}


def _scaled(raw: int, scale: float) -> float | None:
    return None if raw == NA else raw * scale


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement sample. Angles in degrees, lengths in mm; None where the device sent NA."""

    seq: int
    device_time_us: int  # tick30: wraps every 2**30 us; see clock mapping
    needle_angle_deg: float | None
    guide_angle_deg: float | None
    depth_mm: float | None
    tip_depth_mm: float | None
    pitch_deg: float | None
    roll_deg: float | None
    flags: Flag

    @property
    def flag_names(self) -> list[str]:
        return [f.name for f in Flag if f in self.flags and f.name]


def decode_sample(data: bytes | bytearray | memoryview) -> Sample:
    if len(data) != SAMPLE_SIZE:
        raise ProtocolError(f"a sample is {SAMPLE_SIZE} bytes, got {len(data)}")
    seq, t, needle, guide, depth, tip, pitch, roll, word = _SAMPLE.unpack(data)
    version = word >> 12
    if version != VERSION:
        raise ProtocolError(f"sample layout version {version}, this host reads version {VERSION}")
    if t >= TICK_PERIOD_US:
        raise ProtocolError(f"device time 0x{t:08x} has bits above the 30-bit tick set")
    return Sample(
        seq=seq,
        device_time_us=t,
        needle_angle_deg=_scaled(needle, 0.01),
        guide_angle_deg=_scaled(guide, 0.01),
        depth_mm=_scaled(depth, 0.01),
        tip_depth_mm=_scaled(tip, 0.01),
        pitch_deg=_scaled(pitch, 0.01),
        roll_deg=_scaled(roll, 0.01),
        flags=Flag(word & FLAG_MASK),
    )


def decode_notification(data: bytes | bytearray | memoryview) -> list[Sample]:
    """All samples of one measurement notification, oldest first; all or nothing."""
    n, rest = divmod(len(data), SAMPLE_SIZE)
    if n == 0 or rest:
        raise ProtocolError(f"a notification is a positive multiple of {SAMPLE_SIZE} bytes, got {len(data)}")
    view = memoryview(bytes(data))
    return [decode_sample(view[i * SAMPLE_SIZE : (i + 1) * SAMPLE_SIZE]) for i in range(n)]


@dataclass(frozen=True, slots=True)
class Status:
    state: DeviceState
    battery_pct: int | None
    battery_mv: int
    flags: Flag
    dropped: int
    rate_hz: int
    calibration_id: int
    fifo_overruns: int
    uptime_s: int
    loop_load_pct: int | None = None  # share of the last second the device's loop was busy; None: not reported


@dataclass(frozen=True, slots=True)
class Result:
    opcode: int
    token: int
    code: ResultCode
    value: int


@dataclass(frozen=True, slots=True)
class Config:
    guide_angle_deg: float
    needle_length_mm: float
    nogo_depth_mm: float | None
    nogo_margin_mm: float
    rate_hz: int
    calibration_id: int
    cal_points: int
    tare_mm: float


Record = Status | Result | Config


def _expect(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise ProtocolError(f"a {what} record is {size} bytes, got {len(data)}")


def _version(v: int, what: str) -> None:
    if v != VERSION:
        raise ProtocolError(f"{what} record version {v}, this host reads version {VERSION}")


def decode_record(data: bytes | bytearray | memoryview) -> Record:
    """A value of the status characteristic: STATUS, RESULT or CONFIG."""
    data = bytes(data)
    if not data:
        raise ProtocolError("empty status record")
    kind = data[0]
    if kind == 0x01:
        _expect(data, _STATUS.size, "STATUS")
        load: int | None = None
        if data[1] == 2:
            _, ver, state, batt, mv, flags, dropped, rate, cal, overruns, up_lo, up_hi, load = _STATUS_V2.unpack(data)
            uptime = up_lo | up_hi << 16
            if load == 255:
                load = None
            elif load > 100:
                raise ProtocolError(f"STATUS record with a loop load of {load} %")
        else:
            _, ver, state, batt, mv, flags, dropped, rate, cal, overruns, uptime = _STATUS.unpack(data)
            _version(ver, "STATUS")
        if state not in DeviceState._value2member_map_ or flags & ~FLAG_MASK:
            raise ProtocolError(f"STATUS record with state {state} and flags 0x{flags:04x} is not valid")
        return Status(DeviceState(state), None if batt == 255 else batt, mv, Flag(flags), dropped, rate, cal,
                      overruns, uptime, load)
    if kind == 0x02:
        _expect(data, _RESULT.size, "RESULT")
        _, op, token, code, value = _RESULT.unpack(data)
        if code not in ResultCode._value2member_map_:
            raise ProtocolError(f"RESULT record with unknown result code {code}")
        return Result(op, token, ResultCode(code), value)
    if kind == 0x03:
        _expect(data, _CONFIG.size, "CONFIG")
        _, ver, guide, length, nogo, margin, rate, cal, points, _r1, tare, _r2 = _CONFIG.unpack(data)
        _version(ver, "CONFIG")
        return Config(guide * 0.01, length * 0.1, _scaled(nogo, 0.01), margin * 0.01, rate, cal, points,
                      tare * 0.01)
    raise ProtocolError(f"unknown status record type 0x{kind:02x}")


def encode_command(opcode: Opcode | int, token: int, *args: int) -> bytes:
    """Pack a control command. Only the layout is checked here: the device owns the valid ranges."""
    try:
        op = Opcode(opcode)
    except ValueError:
        raise ProtocolError(f"unknown opcode 0x{int(opcode):02x}") from None
    fmt = COMMAND_PAYLOAD[op]
    if len(args) != len(fmt):
        raise ProtocolError(f"{op.name} takes {len(fmt)} argument(s), got {len(args)}")
    try:
        return struct.pack("<BB" + fmt, op, token, *args)
    except struct.error as e:
        raise ProtocolError(f"{op.name}{args}: {e}") from None
