# Protocol v1 byte layouts (docs/protocol.md is the definition). Everything packs into buffers the caller
# allocated once; nothing here allocates, so it may run in the sampling loop.
from micropython import const
import struct

VERSION = const(1)
SAMPLE_SIZE = const(20)
NA = const(-32768)  # i16 "no measurement"
NA32 = -0x80000000  # i32 "no value" in a RESULT; not a const(): beyond a board's small ints

# Sample flag bits (bits 12-15 carry VERSION).
F_IMU_FAULT = const(0x0001)
F_HALL_FAULT = const(0x0002)
F_UNCALIBRATED = const(0x0004)
F_DEPTH_INVALID = const(0x0008)
F_NOGO_NEAR = const(0x0010)
F_NOGO_REACHED = const(0x0020)
F_TWITCH = const(0x0040)
F_STALE = const(0x0080)
F_MOVING = const(0x0100)
F_SETTLING = const(0x0200)
F_PASS = const(0x0400)
F_LOW_BATTERY = const(0x0800)
FLAG_MASK = const(0x0FFF)
_VERSION_BITS = const(VERSION << 12)
TICK30_MASK = const(0x3FFFFFFF)

# Status record types.
REC_STATUS = const(0x01)
REC_RESULT = const(0x02)
REC_CONFIG = const(0x03)
STATUS_SIZE = const(20)
RESULT_SIZE = const(8)
CONFIG_SIZE = const(20)

# Control opcodes.
OP_SET_GUIDE_ANGLE = const(0x01)
OP_SET_NEEDLE_LENGTH = const(0x02)
OP_SET_NOGO = const(0x03)
OP_SET_OUTPUT_RATE = const(0x04)
OP_TARE = const(0x05)
OP_CAL_BEGIN = const(0x06)
OP_CAL_POINT = const(0x07)
OP_CAL_COMMIT = const(0x08)
OP_CAL_ABORT = const(0x09)
OP_IDENTIFY = const(0x0A)
OP_REBOOT = const(0x0B)
OP_READ_CONFIG = const(0x0C)
OP_READ_STATUS = const(0x0D)
OP_READ_FIELD = const(0x0E)
OP_CAL_RESIDUAL = const(0x0F)

# Result codes.
R_OK = const(0)
R_UNKNOWN_OPCODE = const(1)
R_BAD_LENGTH = const(2)
R_OUT_OF_RANGE = const(3)
R_BAD_STATE = const(4)
R_NOT_PERMITTED = const(5)
R_STORE_FAILED = const(6)

# Device states in the STATUS record.
ST_BOOT = const(0)
ST_RUNNING = const(1)
ST_CALIBRATING = const(2)
ST_FAULT = const(3)

_SAMPLE_FMT = "<HIhhhhhhH"
_STATUS_FMT = "<BBBBHHHHHHHBB"  # version 2: uptime as u24 (low u16, high u8), then the loop's load
STATUS_VERSION = const(2)
_RESULT_FMT = "<BBBBi"
_CONFIG_FMT = "<BBhHhHHHBBhH"


def sat16(v):
    # Clamp into i16 without producing NA, which only a caller may choose.
    if v > 32767:
        return 32767
    if v < -32767:
        return -32767
    return v


def to_cdeg(mdeg):
    # mdeg -> cdeg, rounded half away from zero, saturated.
    if mdeg >= 0:
        return sat16((mdeg + 5) // 10)
    return sat16(-((5 - mdeg) // 10))


def to_d10um(um):
    # um -> units of 10 um, rounded half away from zero, saturated.
    if um >= 0:
        return sat16((um + 5) // 10)
    return sat16(-((5 - um) // 10))


def pack_sample(buf, off, seq, t_us, needle, guide, depth, tip, pitch, roll, flags):
    # Angles in cdeg, lengths in d10um (NA allowed), t_us a ticks_us() value.
    struct.pack_into(
        _SAMPLE_FMT, buf, off,
        seq & 0xFFFF, t_us & TICK30_MASK, needle, guide, depth, tip, pitch, roll,
        (flags & FLAG_MASK) | _VERSION_BITS,
    )


def pack_status(buf, state, battery_pct, battery_mv, flags, dropped, rate_hz, cal_id, overruns, uptime_s,
                load_pct=255):
    # load_pct: share of the last second the loop was busy (compute and bus), 0-100; 255 = not known yet.
    if uptime_s > 0xFFFFFF:
        uptime_s = 0xFFFFFF
    struct.pack_into(
        _STATUS_FMT, buf, 0,
        REC_STATUS, STATUS_VERSION, state, battery_pct, battery_mv, flags & FLAG_MASK,
        dropped if dropped < 0xFFFF else 0xFFFF, rate_hz, cal_id,
        overruns if overruns < 0xFFFF else 0xFFFF, uptime_s & 0xFFFF, uptime_s >> 16,
        load_pct if load_pct <= 100 else 255,
    )


def pack_result(buf, opcode, token, code, value):
    struct.pack_into(_RESULT_FMT, buf, 0, REC_RESULT, opcode, token, code, value)


def pack_config(buf, guide_cdeg, needle_dmm, nogo_d10um, margin_d10um, rate_hz, cal_id, cal_points, tare_d10um):
    struct.pack_into(
        _CONFIG_FMT, buf, 0,
        REC_CONFIG, VERSION, guide_cdeg, needle_dmm, nogo_d10um, margin_d10um, rate_hz, cal_id, cal_points, 0,
        tare_d10um, 0,
    )
