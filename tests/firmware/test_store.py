# Configuration and calibration store on MicroPython, in a fresh directory under /tmp.
import os
import time

import depth
import store
from mptest import eq, raises


def _tmpdir():
    d = "/tmp/nt_store_%d_%d" % (time.time(), time.ticks_us() & 0xFFFFFF)
    os.mkdir(d)
    return d


def _clean(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _cfg():
    return {"guide_angle_mdeg": 30000, "needle_length_um": 60000, "nogo_depth_um": 42000,
            "nogo_margin_um": 3000, "rate_hz": 100, "tare_um": 1234}


def _cal():
    cal = store.default_calibration()
    del cal["id"]
    cal["sensors"][0]["disp_um"] = [v + 250 for v in cal["sensors"][0]["disp_um"]]
    cal["sensors"][1]["angle_mdeg"] = [v - 700 for v in cal["sensors"][1]["angle_mdeg"]]
    cal["disp_tc_ppm"] = 60
    return cal


def _in(d, name):
    return d + "/" + name


def test_checksums_match_their_standard_check_values():
    eq(store.crc32(b"123456789"), 0xCBF43926)
    eq(store._crc32_soft(b"123456789"), 0xCBF43926)
    eq(store.crc16(b"123456789"), 0x29B1)  # CRC-16/CCITT-FALSE


def test_config_roundtrip():
    d = _tmpdir()
    try:
        p = _in(d, "cfg.json")
        store.save_config(_cfg(), p)
        got, status = store.load_config(p)
        eq(status, store.OK)
        eq(got, _cfg())
        assert "cfg.json.tmp" not in os.listdir(d)
    finally:
        _clean(d)


def test_calibration_roundtrip_and_id():
    d = _tmpdir()
    try:
        p = _in(d, "cal.json")
        cal = _cal()
        cid = store.save_calibration(cal, p)
        got, status = store.load_calibration(p)
        eq(status, store.OK)
        eq(got["id"], cid)
        assert cid != 0
        eq(cid, store.calibration_id(cal))
        del got["id"]
        eq(got, cal)
        # The loaded calibration drives the estimator.
        e = depth.DepthEstimator()
        e.load(got)
        # A different table has a different id; the factory table keeps id 0.
        cal["sensors"][0]["disp_um"][3] += 1
        assert store.calibration_id(cal) != cid
        eq(store.save_calibration(store.default_calibration(), p), 0)
        eq(store.load_calibration(p)[0]["id"], 0)
    finally:
        _clean(d)


def test_missing_files_give_defaults():
    d = _tmpdir()
    try:
        cfg, status = store.load_config(_in(d, "nope.json"))
        eq(status, store.MISSING)
        eq(cfg, store.default_config())
        cal, status = store.load_calibration(_in(d, "nope.json"))
        eq(status, store.MISSING)
        eq(cal["id"], 0)
        eq(cal["sensors"], store.FACTORY_CALIBRATION["sensors"])
        # Defaults are copies: changing one does not change the next.
        cal["sensors"][0]["disp_um"][0] = 1
        cfg["rate_hz"] = 11
        eq(store.load_calibration(_in(d, "nope.json"))[0]["sensors"][0]["disp_um"][0],
           store.FACTORY_CALIBRATION["sensors"][0]["disp_um"][0])
        eq(store.load_config(_in(d, "nope.json"))[0]["rate_hz"], store.CONFIG_FIELDS["rate_hz"][2])
    finally:
        _clean(d)


def test_every_corrupted_byte_is_detected():
    d = _tmpdir()
    try:
        p = _in(d, "cfg.json")
        store.save_config(_cfg(), p)
        good = _read(p)
        for i in range(len(good)):
            bad = bytearray(good)
            bad[i] ^= 0x04 if i % 2 else 0x41
            _write(p, bad)
            cfg, status = store.load_config(p)
            assert status != store.OK, "byte %d flipped and still OK" % i
            eq(cfg, store.default_config())
        pc = _in(d, "cal.json")
        store.save_calibration(_cal(), pc)
        good = _read(pc)
        for i in range(0, len(good), 3):
            bad = bytearray(good)
            bad[i] ^= 0x10
            _write(pc, bad)
            cal, status = store.load_calibration(pc)
            assert status != store.OK, "byte %d flipped and still OK" % i
            eq(cal["id"], 0)
    finally:
        _clean(d)


def test_truncated_files_are_detected():
    d = _tmpdir()
    try:
        p = _in(d, "cal.json")
        store.save_calibration(_cal(), p)
        good = _read(p)
        for n in range(len(good)):
            _write(p, good[:n])
            cal, status = store.load_calibration(p)
            assert status in (store.TRUNCATED, store.CORRUPT), (n, status)
            eq(cal["id"], 0)
        _write(p, good[:-1])
        eq(store.load_calibration(p)[1], store.TRUNCATED)
        _write(p, good + b" ")
        eq(store.load_calibration(p)[1], store.CORRUPT)
    finally:
        _clean(d)


def test_wrong_version_gives_defaults():
    d = _tmpdir()
    try:
        p = _in(d, "cfg.json")
        store.save_config(_cfg(), p)
        good = _read(p)
        nl = good.find(b"\n")
        header = good[:nl].replace(b" v1 ", b" v2 ")
        _write(p, header + good[nl:])  # checksum still right: only the version is wrong
        cfg, status = store.load_config(p)
        eq(status, store.BAD_VERSION)
        eq(cfg, store.default_config())
        # A calibration file is not a config file.
        pc = _in(d, "cal.json")
        store.save_calibration(_cal(), pc)
        eq(store.load_config(pc)[1], store.CORRUPT)
    finally:
        _clean(d)


def test_checksummed_but_invalid_values_give_defaults():
    d = _tmpdir()
    try:
        p = _in(d, "cfg.json")
        bad = _cfg()
        bad["rate_hz"] = 5000
        store._write_atomic(p, "config", store.CONFIG_VERSION, '{"rate_hz": 5000}')
        eq(store.load_config(p)[1], store.INVALID)
        import json

        store._write_atomic(p, "config", store.CONFIG_VERSION, json.dumps(bad))
        cfg, status = store.load_config(p)
        eq(status, store.INVALID)
        eq(cfg, store.default_config())
        # A calibration whose stored id does not match its tables.
        pc = _in(d, "cal.json")
        cal = _cal()
        cal["id"] = 1234
        store._write_atomic(pc, "calibration", store.CAL_VERSION, json.dumps(cal))
        eq(store.load_calibration(pc)[1], store.INVALID)
    finally:
        _clean(d)


def test_interrupted_write_keeps_old_file():
    d = _tmpdir()
    try:
        p = _in(d, "cfg.json")
        old = _cfg()
        store.save_config(old, p)
        # Power lost while writing the new file: a partial temp file is left behind.
        new = _cfg()
        new["rate_hz"] = 200
        store.save_config(new, _in(d, "scratch.json"))
        full = _read(_in(d, "scratch.json"))
        _write(p + ".tmp", full[: len(full) // 2])
        cfg, status = store.load_config(p)
        eq(status, store.OK)
        eq(cfg, old)
        # Lost after the temp file was complete but before the rename: still the old file.
        _write(p + ".tmp", full)
        eq(store.load_config(p)[0], old)
        # The next save replaces the stale temp file and succeeds.
        store.save_config(new, p)
        eq(store.load_config(p)[0], new)
        assert "cfg.json.tmp" not in os.listdir(d)
        # Where rename cannot replace (FAT), a crash can leave only a complete temp file: it is used...
        os.remove(p)
        _write(p + ".tmp", full)
        cfg, status = store.load_config(p)
        eq(status, store.OK)
        eq(cfg, new)
        # ...but never a partial one.
        _write(p + ".tmp", full[:-3])
        eq(store.load_config(p), (store.default_config(), store.MISSING))
    finally:
        _clean(d)


def test_out_of_range_values_are_rejected_and_change_nothing():
    d = _tmpdir()
    try:
        p = _in(d, "cfg.json")
        store.save_config(_cfg(), p)
        before = _read(p)
        cases = (("rate_hz", 5), ("rate_hz", 1001), ("guide_angle_mdeg", 90000), ("needle_length_um", 5000),
                 ("nogo_depth_um", -1), ("nogo_margin_um", 20001), ("tare_um", 10 ** 6), ("rate_hz", 50.0),
                 ("rate_hz", True), ("rate_hz", "50"))
        for key, val in cases:
            cfg = _cfg()
            cfg[key] = val
            e = raises(store.StoreError, store.save_config, cfg, p)
            assert key in str(e), str(e)
            eq(_read(p), before)
        cfg = _cfg()
        cfg["colour"] = 3
        assert "colour" in str(raises(store.StoreError, store.save_config, cfg, p))
        cfg = _cfg()
        del cfg["tare_um"]
        assert "tare_um" in str(raises(store.StoreError, store.save_config, cfg, p))
        eq(_read(p), before)

        pc = _in(d, "cal.json")
        store.save_calibration(_cal(), pc)
        before = _read(pc)
        cal = _cal()
        cal["sensors"][0]["disp_um"][4] = cal["sensors"][0]["disp_um"][2]
        e = raises(store.StoreError, store.save_calibration, cal, pc)
        assert "disp_um[4]" in str(e), str(e)
        cal = _cal()
        cal["sensors"][1]["angle_mdeg"] = cal["sensors"][1]["angle_mdeg"][:7]
        cal["sensors"][1]["disp_um"] = cal["sensors"][1]["disp_um"][:7]
        raises(store.StoreError, store.save_calibration, cal, pc)
        cal = _cal()
        cal["sensors"][0]["range_mt"] = 133
        assert "range_mt" in str(raises(store.StoreError, store.save_calibration, cal, pc))
        cal = _cal()
        cal["sensors"][0]["gain"] = 1
        assert "gain" in str(raises(store.StoreError, store.save_calibration, cal, pc))
        eq(_read(pc), before)
        eq(store.load_calibration(pc)[1], store.OK)
    finally:
        _clean(d)
