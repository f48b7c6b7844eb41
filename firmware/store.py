# Device configuration and depth calibration as files on the board's filesystem (docs/depth.md, "Store").
#
# File layout: one ASCII header line, then a JSON payload of exactly the stated length:
#   NTSTORE <kind> v<version> <payload length> <crc32 of payload, 8 hex digits>\n{...}
# Saving validates first (a bad value raises StoreError and changes nothing), writes "<path>.tmp", flushes,
# syncs and renames it over the old file: a reader sees the old file or the new one, never a mix. Loading
# never raises: a missing, truncated, corrupt, wrong-version or invalid file yields the defaults and a
# status other than OK (for the calibration: the device is uncalibrated and runs on the factory table).
#
# Not loop code: allocation and big ints (CRC-32) are fine here.
from micropython import const
import json
import os
import struct

import depth

CONFIG_PATH = "/nt_config.json"
CAL_PATH = "/nt_cal.json"
CONFIG_VERSION = const(1)
CAL_VERSION = const(1)
MAX_FILE_BYTES = const(4096)
_MAGIC = "NTSTORE"

# Load status.
OK = "ok"
MISSING = "missing"
TRUNCATED = "truncated"
CORRUPT = "corrupt"
BAD_VERSION = "version"
INVALID = "invalid"

# Configuration: name -> (lowest, highest, default). Units in the names; the ranges are the control
# commands' (docs/protocol.md); nogo_depth_um 0 means no no-go depth is set.
CONFIG_FIELDS = {
    "guide_angle_mdeg": (10000, 80000, 45000),
    "needle_length_um": (10000, 200000, 50000),
    "nogo_depth_um": (0, 200000, 0),
    "nogo_margin_um": (0, 20000, 5000),
    "rate_hz": (10, 1000, 200),
    "tare_um": (-depth.MAX_ABS_DISP_UM, depth.MAX_ABS_DISP_UM, 0),
}

# Nominal calibration of the reference geometry (needletrack.sim.magnet.factory_calibration(), which the
# host tests compare with this copy). Its id is 0: "factory defaults" in the protocol's STATUS record.
FACTORY_CALIBRATION = {
    "sensors": [
        {
            "angle_mdeg": [-136532, -132287, -127340, -121547, -114514, -105941, -95591, -83189,
                          -68370, -50531, -28246, 23628, 39672, 54564, 72355, 87765,
                          99857, 109810, 117667, 124146, 129508, 134006, 137872, 141250],
            "disp_um": [-2969, -750, 1411, 3515, 5619, 7708, 9753, 11744,
                       13693, 15641, 17700, 21921, 23332, 24775, 26789, 28939,
                       31035, 33180, 35273, 37380, 39489, 41604, 43757, 45972],
            "min_field_ut": 1000,
            "range_mt": 40,
            "z_gain_tc_ppm": 0,
        },
        {
            "angle_mdeg": [-141250, -137850, -133893, -129373, -124033, -117735, -110308, -101665,
                          -91540, -79611, -65392, -48511, -27765, 28879, 50960, 68596,
                          82511, 95229, 105670, 114378, 121456, 127272, 132287, 136532],
            "disp_um": [34028, 36257, 38454, 40569, 42660, 44705, 46694, 48600,
                       50443, 52245, 54039, 55837, 57737, 62355, 64402, 66337,
                       68160, 70181, 72232, 74344, 76455, 78561, 80749, 82969],
            "min_field_ut": 1000,
            "range_mt": 40,
            "z_gain_tc_ppm": 0,
        },
    ],
    "blend_um": [37000, 43000],
    "disagree_um": 3000,
    "cal_temp_cdeg": 2000,
    "disp_tc_ppm": 0,
}

_CAL_KEYS = ("sensors", "blend_um", "disagree_um", "cal_temp_cdeg", "disp_tc_ppm", "id")
_SENSOR_KEYS = ("angle_mdeg", "disp_um", "min_field_ut", "range_mt", "z_gain_tc_ppm")


class StoreError(ValueError):
    pass


def _copy(obj):
    # Deep copy of the JSON-shaped data, so callers never share the defaults.
    if isinstance(obj, dict):
        return {k: _copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_copy(v) for v in obj]
    return obj


def default_config():
    return {k: v[2] for k, v in CONFIG_FIELDS.items()}


def default_calibration():
    cal = _copy(FACTORY_CALIBRATION)
    cal["id"] = 0
    return cal


def validate_config(cfg):
    """Raise StoreError naming the first missing, unknown or out-of-range field."""
    if not isinstance(cfg, dict):
        raise StoreError("config: not a dict")
    for k in cfg:
        if k not in CONFIG_FIELDS:
            raise StoreError("config: unknown field %r" % (k,))
    for k, (lo, hi, _) in CONFIG_FIELDS.items():
        if k not in cfg:
            raise StoreError("config.%s: missing" % k)
        v = cfg[k]
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
            raise StoreError("config.%s: %r is not an integer in %d .. %d" % (k, v, lo, hi))


# CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): the protocol's calibration_id.
def crc16(data, crc=0xFFFF):
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def _crc32_soft(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


try:
    import binascii

    _HAVE_CRC32 = hasattr(binascii, "crc32")
except ImportError:  # ports built without binascii
    _HAVE_CRC32 = False


def crc32(data):
    if _HAVE_CRC32:
        return binascii.crc32(data) & 0xFFFFFFFF
    return _crc32_soft(data)


def calibration_id(cal):
    """CRC-16 of the depth tables (point count, then each angle and displacement as little-endian i32).

    0 is reserved for the factory defaults, so a table whose CRC happens to be 0 gets 1.
    """
    crc = 0xFFFF
    for s in cal["sensors"]:
        ang = s["angle_mdeg"]
        disp = s["disp_um"]
        crc = crc16(bytes((len(ang),)), crc)
        for k in range(len(ang)):
            crc = crc16(struct.pack("<ii", ang[k], disp[k]), crc)
    return crc or 1


def validate_calibration(cal):
    """Raise StoreError naming the first field of cal the depth estimator could not use."""
    if not isinstance(cal, dict):
        raise StoreError("calibration: not a dict")
    for k in cal:
        if k not in _CAL_KEYS:
            raise StoreError("calibration: unknown field %r" % (k,))
    sensors = cal.get("sensors")
    if isinstance(sensors, list):
        for i, s in enumerate(sensors):
            if isinstance(s, dict):
                for k in s:
                    if k not in _SENSOR_KEYS:
                        raise StoreError("calibration.sensors[%d]: unknown field %r" % (i, k))
    try:
        depth.check_calibration(cal)
    except depth.CalibrationError as e:
        raise StoreError("calibration." + str(e.args[0])) from None
    if "id" in cal:
        want = 0 if _is_factory(cal) else calibration_id(cal)
        if cal["id"] != want:
            raise StoreError("calibration.id: %r does not match the tables (%d)" % (cal["id"], want))


def _is_factory(cal):
    for k in FACTORY_CALIBRATION:
        if cal.get(k) != FACTORY_CALIBRATION[k]:
            return False
    return True


def _write_atomic(path, kind, version, payload):
    data = payload.encode()
    header = "%s %s v%d %d %08x\n" % (_MAGIC, kind, version, len(data), crc32(data))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.encode())
        f.write(data)
        f.flush()
    if hasattr(os, "sync"):
        os.sync()
    os.rename(tmp, path)


def _read(path, kind, version):
    # (payload object or None, status)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError:
        return None, MISSING
    if len(raw) > MAX_FILE_BYTES:
        return None, CORRUPT
    nl = raw.find(b"\n")
    if nl < 0:
        return None, TRUNCATED if len(raw) < 40 else CORRUPT
    try:
        parts = raw[:nl].decode().split(" ")
    except UnicodeError:
        return None, CORRUPT
    if len(parts) != 5 or parts[0] != _MAGIC or parts[1] != kind or not parts[2].startswith("v"):
        return None, CORRUPT
    try:
        ver = int(parts[2][1:])
        length = int(parts[3])
        crc = int(parts[4], 16)
    except ValueError:
        return None, CORRUPT
    if ver != version:
        return None, BAD_VERSION
    payload = raw[nl + 1:]
    if len(payload) < length:
        return None, TRUNCATED
    if len(payload) > length or crc32(payload) != crc:
        return None, CORRUPT
    try:
        obj = json.loads(payload.decode())
    except (ValueError, UnicodeError):
        return None, CORRUPT
    return obj, OK


def _load(path, kind, version, validate):
    obj, status = _read(path, kind, version)
    if status == MISSING:
        # On filesystems where rename cannot replace (FAT), a crash between removing the old file and
        # renaming can leave only the temp file; it is complete if its checksum says so.
        obj, status = _read(path + ".tmp", kind, version)
        if status != OK:
            return None, MISSING
    if status != OK:
        return None, status
    try:
        validate(obj)
    except StoreError:
        return None, INVALID
    return obj, OK


def save_config(cfg, path=CONFIG_PATH):
    validate_config(cfg)
    _write_atomic(path, "config", CONFIG_VERSION, json.dumps(cfg))


def load_config(path=CONFIG_PATH):
    """(config, status): the stored configuration, or the defaults and why not."""
    obj, status = _load(path, "config", CONFIG_VERSION, validate_config)
    if status != OK:
        return default_config(), status
    return obj, OK


def save_calibration(cal, path=CAL_PATH):
    """Validate and store cal; returns its id (CRC-16 of the tables, as reported in STATUS)."""
    cal = _copy(cal)
    cal.pop("id", None)
    validate_calibration(cal)
    cal["id"] = 0 if _is_factory(cal) else calibration_id(cal)
    _write_atomic(path, "calibration", CAL_VERSION, json.dumps(cal))
    return cal["id"]


def load_calibration(path=CAL_PATH):
    """(calibration, status). Any status but OK means uncalibrated: the factory table is returned."""
    obj, status = _load(path, "calibration", CAL_VERSION, _validate_stored_cal)
    if status != OK:
        return default_calibration(), status
    return obj, OK


def _validate_stored_cal(cal):
    if not isinstance(cal, dict) or "id" not in cal:
        raise StoreError("calibration.id: missing")
    validate_calibration(cal)
