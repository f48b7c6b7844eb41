# Control commands on a whole device on the virtual board: every command's valid and invalid forms, and that a
# refused command changes nothing, in memory or on the flash filesystem.
# mp-heapsize: 4M
import os
import struct
import time

import depth_model
import vboard
import vclock
import flashfs
import machine  # noqa: F401 - the virtual board's, loaded before the flash filesystem hides its directory
import boards.xiao_esp32s3  # noqa: F401 - the pin map select() will import
import device
import packet
import store
import depth as depth_mod
from lsm6dsox_emu import LSM6DSOXEmu
from tmag5273_emu import TMAG5273Emu
from vsources import HallAt, ImuAtRest
from mptest import eq, near

_ROOT = "/tmp/nt-control-test-%d" % (vclock._host_time.ticks_us() & 0xFFFFFF)
os.mkdir(_ROOT)
flashfs.mount_root(_ROOT)
with open("/board", "w") as f:
    f.write("xiao_esp32s3")

HALL_A = HallAt(20.0, depth_model.S_A_MM)
HALL_B = HallAt(20.0, depth_model.S_B_MM)


def _device():
    for name in ("/nt_config.json", "/nt_cal.json"):
        try:
            os.remove(name)
        except OSError:
            pass
    vboard.reset()
    vclock.reset(0)
    vboard.board.clock = vclock.now_us
    HALL_A.move_to(20.0)
    HALL_B.move_to(20.0)
    for e in (LSM6DSOXEmu(0x6A, ImuAtRest()), TMAG5273Emu("A1", source=HALL_A), TMAG5273Emu("B1", source=HALL_B)):
        vboard.attach(0, e, e.addr)
    store.save_calibration(depth_model.calibration())
    dev = device.Device()
    _run(dev, 0.5)
    return dev


def _run(dev, seconds):
    end = vclock.now_us() + int(seconds * 1e6)
    while vclock.now_us() < end:
        dev.loop.step()


def _cmd(dev, opcode, fmt="", *args, token=7, encrypted=True):
    data = struct.pack("<BB" + fmt, opcode, token, *args)
    result, extra = dev.control.handle(data, encrypted)
    typ, op, tok, code, value = struct.unpack("<BBBBi", result)
    eq((typ, op, tok), (packet.REC_RESULT, opcode, token), "result header")
    return code, value, extra


def _config_file():
    with open("/nt_config.json", "rb") as f:
        return f.read()


def test_every_setter_accepts_its_range_and_saves():
    dev = _device()
    eq(_cmd(dev, packet.OP_SET_GUIDE_ANGLE, "h", 4500)[0], packet.R_OK)
    eq(dev.cfg["guide_angle_mdeg"], 45000)
    eq(dev.loop.cfg.guide_mdeg, 45000)
    eq(_cmd(dev, packet.OP_SET_NEEDLE_LENGTH, "H", 400)[0], packet.R_OK)
    eq(_cmd(dev, packet.OP_SET_NOGO, "hH", 1700, 300)[0], packet.R_OK)
    eq(dev.loop.cfg.nogo_um, 17000)
    eq(_cmd(dev, packet.OP_SET_OUTPUT_RATE, "H", 100)[0], packet.R_OK)
    eq(dev.loop.cfg.rate_hz, 100)
    cfg, status = store.load_config()
    eq(status, store.OK)
    eq((cfg["guide_angle_mdeg"], cfg["needle_length_um"], cfg["nogo_depth_um"], cfg["nogo_margin_um"],
        cfg["rate_hz"]), (45000, 40000, 17000, 3000, 100))
    code, _, rec = _cmd(dev, packet.OP_READ_CONFIG)
    eq(code, packet.R_OK)
    fields = struct.unpack("<BBhHhHHHBBhH", rec)
    eq(fields[:7], (packet.REC_CONFIG, 1, 4500, 400, 1700, 300, 100))
    eq(_cmd(dev, packet.OP_SET_NOGO, "hH", packet.NA, 0)[0], packet.R_OK)  # clear
    eq(dev.loop.cfg.nogo_um, -1)


def test_bad_commands_are_refused_and_change_nothing():
    dev = _device()
    eq(_cmd(dev, packet.OP_SET_GUIDE_ANGLE, "h", 3000)[0], packet.R_OK)
    before_file = _config_file()
    before = dict(dev.cfg)
    cases = (
        (packet.OP_SET_GUIDE_ANGLE, "h", (999,), packet.R_OUT_OF_RANGE),
        (packet.OP_SET_GUIDE_ANGLE, "h", (8001,), packet.R_OUT_OF_RANGE),
        (packet.OP_SET_GUIDE_ANGLE, "B", (30,), packet.R_BAD_LENGTH),
        (packet.OP_SET_NEEDLE_LENGTH, "H", (99,), packet.R_OUT_OF_RANGE),
        (packet.OP_SET_NOGO, "hH", (99, 0), packet.R_OUT_OF_RANGE),
        (packet.OP_SET_NOGO, "hH", (2000, 2001), packet.R_OUT_OF_RANGE),
        (packet.OP_SET_NOGO, "h", (2000,), packet.R_BAD_LENGTH),
        (packet.OP_SET_OUTPUT_RATE, "H", (9,), packet.R_OUT_OF_RANGE),
        (packet.OP_SET_OUTPUT_RATE, "H", (1001,), packet.R_OUT_OF_RANGE),
        (packet.OP_IDENTIFY, "B", (0,), packet.R_OUT_OF_RANGE),
        (packet.OP_IDENTIFY, "B", (11,), packet.R_OUT_OF_RANGE),
        (packet.OP_TARE, "B", (1,), packet.R_BAD_LENGTH),
        (0x7E, "", (), packet.R_UNKNOWN_OPCODE),
        (packet.OP_CAL_POINT, "h", (1000,), packet.R_BAD_STATE),  # not calibrating
        (packet.OP_CAL_COMMIT, "", (), packet.R_BAD_STATE),
        (packet.OP_READ_FIELD, "B", (2,), packet.R_OUT_OF_RANGE),
        (packet.OP_READ_FIELD, "B", (255,), packet.R_OUT_OF_RANGE),
        (packet.OP_READ_FIELD, "", (), packet.R_BAD_LENGTH),
        (packet.OP_READ_FIELD, "H", (0,), packet.R_BAD_LENGTH),
        (packet.OP_CAL_RESIDUAL, "B", (0,), packet.R_BAD_STATE),  # nothing committed since boot
        (packet.OP_CAL_RESIDUAL, "", (), packet.R_BAD_LENGTH),
        (packet.OP_CAL_RESIDUAL, "H", (0,), packet.R_BAD_LENGTH),
        (0x10, "B", (0,), packet.R_UNKNOWN_OPCODE),
    )
    for op, fmt, args, want in cases:
        eq(_cmd(dev, op, fmt, *args)[0], want, "opcode 0x%02x %r" % (op, args))
    for raw in (b"", b"\x01"):
        result, _ = dev.control.handle(raw, True)
        eq(result[3], packet.R_BAD_LENGTH, "short command %r" % raw)
    eq(dev.cfg, before)
    eq(_config_file(), before_file)


def test_configuration_needs_an_encrypted_link():
    dev = _device()
    before_file = _config_file() if "nt_config.json" in os.listdir("/") else None
    for op, fmt, args in ((packet.OP_SET_GUIDE_ANGLE, "h", (4500,)), (packet.OP_TARE, "", ()),
                          (packet.OP_CAL_BEGIN, "", ()), (packet.OP_REBOOT, "", ())):
        eq(_cmd(dev, op, fmt, *args, encrypted=False)[0], packet.R_NOT_PERMITTED, "opcode 0x%02x" % op)
    eq(dev.control.reboot_pending, False)
    eq(dev.control.calibrating, False)
    eq(_config_file() if before_file is not None else None, before_file)
    # Reading is allowed on any link.
    code, _, rec = _cmd(dev, packet.OP_READ_STATUS, encrypted=False)
    eq(code, packet.R_OK)
    eq(rec[0], packet.REC_STATUS)
    eq(struct.unpack_from("<H", rec, 10)[0], 200)  # rate
    eq(_cmd(dev, packet.OP_READ_FIELD, "B", 0, encrypted=False)[0], packet.R_OK)
    eq(_cmd(dev, packet.OP_CAL_RESIDUAL, "B", 0, encrypted=False)[0], packet.R_BAD_STATE)  # not NOT_PERMITTED


def test_tare_makes_the_current_depth_zero():
    dev = _device()
    code, value, _ = _cmd(dev, packet.OP_TARE)
    eq(code, packet.R_OK)
    assert 19500 < value < 20500, value  # the carriage displacement that became zero, um
    _run(dev, 0.2)
    assert abs(dev.depth.depth_um) < 300, dev.depth.depth_um
    eq(store.load_config()[0]["tare_um"], value)


# Each sensor's share of the stroke in the factory table, 2 mm slack each side (depth.fit_calibration).
SHARES_MM = ((-4.969, 47.972), (32.028, 84.969))


def _table_um(sensor, angle):
    # A table's displacement at a field angle: linear between its points, extended past its ends.
    ang = sensor["angle_mdeg"]
    disp = sensor["disp_um"]
    k = 0
    while k < len(ang) - 2 and angle > ang[k + 1]:
        k += 1
    return disp[k] + (angle - ang[k]) * (disp[k + 1] - disp[k]) / (ang[k + 1] - ang[k])


def test_jig_calibration_fits_stores_and_clears_uncalibrated():
    dev = _device()
    os.remove("/nt_cal.json")
    dev2 = device.Device()  # boots without a calibration file
    assert dev2.loop.extra_flags & packet.F_UNCALIBRATED
    dev = dev2
    HALL_A.move_to(33.0)
    HALL_B.move_to(33.0)
    _run(dev, 0.5)
    factory_err = abs(dev.depth.depth_um - 33000)
    eq(_cmd(dev, packet.OP_CAL_BEGIN)[0], packet.R_OK)
    eq(dev.state(), packet.ST_CALIBRATING)
    jig = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 75.0)
    recorded = []
    for i, mm in enumerate(jig):
        HALL_A.move_to(mm)
        HALL_B.move_to(mm)
        _run(dev, 0.1)
        if i == 3:
            eq(_cmd(dev, packet.OP_CAL_COMMIT)[:2], (packet.R_BAD_STATE, 3))  # too few points yet
        field = [_cmd(dev, packet.OP_READ_FIELD, "B", i)[:2] for i in (0, 1)]
        recorded.append([v if c == packet.R_OK else None for c, v in field])
        code, angle, _ = _cmd(dev, packet.OP_CAL_POINT, "h", int(mm * 100))
        eq(code, packet.R_OK, "jig point %g mm" % mm)
        eq(angle, recorded[-1][0] if recorded[-1][0] is not None else recorded[-1][1])
        assert -180000 < angle <= 180000
    code, cal_id, _ = _cmd(dev, packet.OP_CAL_COMMIT)
    eq(code, packet.R_OK)
    assert 0 < cal_id < 65536
    eq(dev.loop.extra_flags & packet.F_UNCALIBRATED, 0)
    eq(dev.state(), packet.ST_RUNNING)
    cal, status = store.load_calibration()
    eq(status, store.OK)
    eq(store.calibration_id(cal), cal_id)
    # Each residual is where the new table puts its point: the table's displacement at the angles recorded
    # there (read with READ_FIELD just before the CAL_POINT), for the sensors whose share of the stroke holds
    # the point (their mean where both do), less the jig's value.
    cal = store.load_calibration()[0]
    residuals = _residuals(dev)
    print("residuals (um):", residuals)
    eq(len(residuals), len(jig))
    for mm, (a, b), r in zip(jig, recorded, residuals):
        want = [_table_um(cal["sensors"][i], th) for i, th in ((0, a), (1, b))
                if th is not None and SHARES_MM[i][0] <= mm <= SHARES_MM[i][1]]
        near(r, sum(want) / len(want) - mm * 1000, 1, "residual at %g mm" % mm)
        assert abs(r) < 500, (mm, r)
    HALL_A.move_to(33.0)
    HALL_B.move_to(33.0)
    _run(dev, 0.2)
    # This clip's field (a point dipole) differs in shape from the factory table (a cylinder magnet); the fit
    # of that table to the jig must bring the depth much closer than the table alone.
    err = abs(dev.depth.depth_um - 33000)
    assert err < 500 and err < factory_err / 2, (err, factory_err)


def test_read_field_is_the_angle_cal_point_records():
    dev = _device()  # the magnet at 20 mm: over sensor A, 40 mm from sensor B
    code, a, extra = _cmd(dev, packet.OP_READ_FIELD, "B", 0)
    eq((code, extra), (packet.R_OK, None))
    eq(a, dev.depth.angle_a)
    assert -180000 < a <= 180000, a
    eq(_cmd(dev, packet.OP_CAL_BEGIN)[0], packet.R_OK)
    eq(_cmd(dev, packet.OP_CAL_POINT, "h", 2000)[:2], (packet.R_OK, a))
    # The magnet past sensor B, far from A: A has no field (refused), B's angle is what CAL_POINT records.
    HALL_A.move_to(75.0)
    HALL_B.move_to(75.0)
    _run(dev, 0.1)
    eq(_cmd(dev, packet.OP_READ_FIELD, "B", 0)[:2], (packet.R_BAD_STATE, 0))
    code, b, _ = _cmd(dev, packet.OP_READ_FIELD, "B", 1)
    eq(code, packet.R_OK)
    eq(b, dev.depth.angle_b)
    eq(_cmd(dev, packet.OP_CAL_POINT, "h", 7500)[:2], (packet.R_OK, b))
    # The live readout follows the field as the magnet moves.
    HALL_A.move_to(70.0)
    HALL_B.move_to(70.0)
    _run(dev, 0.1)
    code, b70, _ = _cmd(dev, packet.OP_READ_FIELD, "B", 1)
    eq(code, packet.R_OK)
    assert abs(b70 - b) > 2000, (b, b70)
    # Sensor B off the bus: at fault, no field to read.
    vboard.detach(0, dev.board.HALL_B_ADDR)
    _run(dev, 0.2)
    eq(_cmd(dev, packet.OP_READ_FIELD, "B", 1)[:2], (packet.R_BAD_STATE, 0))
    eq(_cmd(dev, packet.OP_CAL_ABORT)[0], packet.R_OK)


def _angle_at(sensor, um):
    # The field angle (mdeg) at which a table puts displacement um: its inverse, interpolated and rounded.
    ang = sensor["angle_mdeg"]
    disp = sensor["disp_um"]
    for k in range(len(disp) - 1):
        if disp[k] <= um <= disp[k + 1]:
            return round(ang[k] + (um - disp[k]) * (ang[k + 1] - ang[k]) / (disp[k + 1] - disp[k]))
    raise ValueError("%d um is outside the table" % um)


def _record_exact(dev, jig_mm):
    # CAL_POINTs whose field angles lie exactly on the factory table (set on the estimator, as the loop would):
    # a sensor reads a field where its share of the stroke is (see depth.fit_calibration), none elsewhere.
    base = store.default_calibration()["sensors"]
    for mm in jig_mm:
        um = round(mm * 1000)
        a = _angle_at(base[0], um) if um < 46000 else depth_mod.INVALID
        b = _angle_at(base[1], um) if 34100 < um < 82900 else depth_mod.INVALID
        if um > 84000:
            b = 120000  # beyond both shares of the stroke: recorded, but no fit uses it
        dev.depth.angle_a = a
        dev.depth.angle_b = b
        code, value, _ = _cmd(dev, packet.OP_CAL_POINT, "h", round(mm * 100))
        eq((code, value), (packet.R_OK, a if a != depth_mod.INVALID else b), "CAL_POINT at %g mm" % mm)


def _residuals(dev):
    out = []
    while True:
        code, value, _ = _cmd(dev, packet.OP_CAL_RESIDUAL, "B", len(out))
        if code == packet.R_OUT_OF_RANGE:
            return out
        eq(code, packet.R_OK, "CAL_RESIDUAL %d" % len(out))
        out.append(value)


EXACT_MM = (2.0, 8.0, 14.0, 20.0, 26.0, 40.0, 52.0, 60.0, 70.0, 80.0)  # A only, both at 40, B only


def test_residuals_of_an_exact_table_are_zero_and_kept_until_the_next_commit():
    dev = _device()
    eq(_cmd(dev, packet.OP_CAL_RESIDUAL, "B", 0)[:2], (packet.R_BAD_STATE, 0))  # nothing committed yet
    eq(_cmd(dev, packet.OP_CAL_BEGIN)[0], packet.R_OK)
    _record_exact(dev, EXACT_MM)
    eq(_cmd(dev, packet.OP_CAL_RESIDUAL, "B", 0)[:2], (packet.R_BAD_STATE, 0))  # points, but no commit
    code, cal_id, _ = _cmd(dev, packet.OP_CAL_COMMIT)
    eq(code, packet.R_OK)
    # The fit gives back the factory table itself, which puts every point exactly where the jig says.
    eq(dev.cal["sensors"], store.default_calibration()["sensors"])
    eq(_residuals(dev), [0] * len(EXACT_MM))
    eq(_cmd(dev, packet.OP_CAL_RESIDUAL, "B", 255)[:2], (packet.R_OUT_OF_RANGE, 0))
    # A new calibration under way, refused or aborted: the residuals are still those of the committed one.
    eq(_cmd(dev, packet.OP_CAL_BEGIN)[0], packet.R_OK)
    _record_exact(dev, (10.0, 20.0))
    eq(_cmd(dev, packet.OP_CAL_COMMIT)[:2], (packet.R_BAD_STATE, 2))
    eq(_cmd(dev, packet.OP_CAL_ABORT)[0], packet.R_OK)
    eq(_residuals(dev), [0] * len(EXACT_MM))
    # The next commit replaces them; a point outside both sensors' shares of the stroke has none (NA32).
    eq(_cmd(dev, packet.OP_CAL_BEGIN)[0], packet.R_OK)
    _record_exact(dev, EXACT_MM + (150.0,))
    eq(_cmd(dev, packet.OP_CAL_COMMIT)[:2], (packet.R_OK, cal_id))
    eq(_residuals(dev), [0] * len(EXACT_MM) + [packet.NA32])


def test_calibration_abort_keeps_the_old_table():
    dev = _device()
    before = store.calibration_id(dev.cal)
    eq(_cmd(dev, packet.OP_CAL_BEGIN)[0], packet.R_OK)
    eq(_cmd(dev, packet.OP_CAL_POINT, "h", 2000)[0], packet.R_OK)
    eq(_cmd(dev, packet.OP_CAL_ABORT)[0], packet.R_OK)
    eq(dev.control.calibrating, False)
    eq(store.calibration_id(store.load_calibration()[0]), before)


def test_identify_and_reboot_are_scheduled_not_immediate():
    dev = _device()
    eq(_cmd(dev, packet.OP_IDENTIFY, "B", 3)[0], packet.R_OK)
    eq(dev.control.identify_s, 3)
    eq(_cmd(dev, packet.OP_REBOOT)[0], packet.R_OK)
    eq(dev.control.reboot_pending, True)


def _i16(b, i):
    v = b[i] | b[i + 1] << 8
    return v - 0x10000 if v & 0x8000 else v


def _collect(dev, reader, seconds, got):
    # Run the device's loop as Device.run() does, keeping (seq, t, needle cdeg, flags) of every sample.
    out = bytearray(20 * 12)
    end = vclock.now_us() + int(seconds * 1e6)
    while vclock.now_us() < end:
        dev.loop.step()
        while True:
            n = reader.drain_into(out, 12)
            if not n:
                break
            for k in range(n):
                o = 20 * k
                t = out[o + 2] | out[o + 3] << 8 | out[o + 4] << 16 | out[o + 5] << 24
                got.append((out[o] | out[o + 1] << 8, t, _i16(out, o + 6), out[o + 18] | (out[o + 19] & 0x0F) << 8))


def _rate(got, first, last):
    # Samples per second of device time between two indices.
    return (last - first) / (time.ticks_diff(got[last][1], got[first][1]) / 1e6)


def test_output_rate_switches_200_1000_200_at_run_time():
    dev = _device()
    emu = vboard.bus(0).devices[0x6A]
    _run(dev, 2.0)  # settled
    reader = dev.ring.reader()
    got = []
    marks = []
    for hz, odr_code, odr_mhz, hall_div in ((1000, 8, 1666750, 4), (200, 7, 833375, 2), (1000, 8, 1666750, 4)):
        _collect(dev, reader, 1.0, got)
        marks.append(len(got))
        eq(_cmd(dev, packet.OP_SET_OUTPUT_RATE, "H", hz)[0], packet.R_OK, "rate %d" % hz)
        eq((dev.cfg["rate_hz"], dev.loop.cfg.rate_hz), (hz, hz))
        eq(emu.regs[0x10] >> 4, odr_code, "CTRL1_XL ODR_XL")
        eq(emu.regs[0x11] >> 4, odr_code, "CTRL2_G ODR_G")
        eq(emu.regs[0x09], odr_code << 4 | odr_code, "FIFO_CTRL3: both batched at the ODR")
        eq((emu.regs[0x10] >> 2) & 3, 0b10, "+-4 g kept")
        eq((emu.regs[0x11] >> 1) & 7, 0b010, "+-500 dps kept")
        eq(emu.regs[0x07], 16, "watermark kept")
        eq((dev.imu_odr_hz, dev.loop.odr_mhz, dev.loop.hall_div), (odr_mhz // 1000, odr_mhz, hall_div))
        assert dev.att is dev.loop.att
        near(dev.att.dt_s, 1000.0 / odr_mhz, 1e-12, "attitude dt")
    _collect(dev, reader, 1.0, got)
    marks.append(len(got))
    # Every sample made it, in order, at the rate asked for in each second (the first 0.1 s after a switch aside).
    for i in range(1, len(got)):
        eq((got[i][0] - got[i - 1][0]) & 0xFFFF, 1, "seq step at %d" % i)
        dt = time.ticks_diff(got[i][1], got[i - 1][1])
        assert 500 <= dt <= 6500, (i, dt)  # never backwards, never a gap across a switch
    for (a, b), hz in zip(((0, marks[0]), (marks[0], marks[1]), (marks[1], marks[2]), (marks[2], marks[3])),
                          (200, 1000, 200, 1000)):
        first = a + hz // 10
        rate = _rate(got, first, b - 1)
        gap = max(time.ticks_diff(got[i][1], got[i - 1][1]) for i in range(max(a, 1), a + 3))
        print("%d Hz: %.2f samples/s, largest spacing at the switch %d us" % (hz, rate, gap))
        near(rate, hz, 1.5, "samples per second at %d Hz" % hz)
    # The attitude went on through the switches: never settling again, the needle angle right throughout.
    for _seq, _t, needle, flags in got:
        eq(flags & (packet.F_SETTLING | packet.F_IMU_FAULT | packet.F_STALE), 0)
        near(needle, 4500, 30, "needle angle (cdeg)")
    # A refused rate changes nothing, the IMU's ODR included.
    before_file = _config_file()
    eq(_cmd(dev, packet.OP_SET_OUTPUT_RATE, "H", 1001)[0], packet.R_OUT_OF_RANGE)
    eq(_config_file(), before_file)
    eq((dev.cfg["rate_hz"], dev.loop.cfg.rate_hz, dev.imu_odr_hz, emu.regs[0x10] >> 4), (1000, 1000, 1666, 8))


def test_the_stored_rate_sets_the_imu_odr_at_boot():
    dev = _device()
    eq(_cmd(dev, packet.OP_SET_OUTPUT_RATE, "H", 1000)[0], packet.R_OK)
    dev = device.Device()  # boots with rate 1000 stored
    emu = vboard.bus(0).devices[0x6A]
    eq((dev.imu_odr_hz, dev.loop.odr_mhz, dev.loop.hall_div, emu.regs[0x10] >> 4), (1666, 1666750, 4, 8))
    near(dev.att.dt_s, 1.0 / 1666.75, 1e-12)
    reader = dev.ring.reader()
    got = []
    _collect(dev, reader, 1.0, got)
    near(_rate(got, 50, len(got) - 1), 1000, 1.5, "samples per second")


def test_a_rate_set_while_the_imu_is_gone_applies_when_it_comes_back():
    dev = _device()
    emu = vboard.bus(0).devices[0x6A]
    vboard.detach(0, 0x6A)
    _run(dev, 0.2)
    eq(dev.loop.imu_ok, 0)
    eq(_cmd(dev, packet.OP_SET_OUTPUT_RATE, "H", 1000)[0], packet.R_OK)
    eq((dev.imu_odr_hz, dev.loop.odr_mhz, dev.loop.hall_div), (1666, 1666750, 4))
    vboard.attach(0, emu, 0x6A)
    _run(dev, 1.0)  # re-probed within 0.5 s
    eq(dev.loop.imu_ok, 1)
    eq((emu.regs[0x10] >> 4, emu.regs[0x11] >> 4), (8, 8), "configured at 1666 Hz on its return")
    reader = dev.ring.reader()
    got = []
    _collect(dev, reader, 1.0, got)
    near(_rate(got, 10, len(got) - 1), 1000, 1.5, "samples per second")
    eq([f & packet.F_IMU_FAULT for _, _, _, f in got], [0] * len(got))


def test_calibration_takes_at_most_255_points():
    dev = _device()
    eq(_cmd(dev, packet.OP_CAL_BEGIN)[0], packet.R_OK)
    for _ in range(255):
        eq(_cmd(dev, packet.OP_CAL_POINT, "h", 2000)[0], packet.R_OK)
    code, value = _cmd(dev, packet.OP_CAL_POINT, "h", 2000)[:2]
    eq((code, value), (packet.R_BAD_STATE, 255))  # the residuals' u8 index could not reach a 256th
    eq(len(dev.control.jig_um), 255)


def test_status_reports_the_loops_load_as_the_board_charges_it():
    # With the board's CPU model on, what the firmware reports of its own load (STATUS loop_load) is the share of
    # device time the probe charged it for compute and the bus.
    dev = _device()
    totals = [0, 0, 0, 0]
    vclock.cpu_model(20 * 1024)
    try:
        dev.measure_load()
        vclock.cpu_totals(totals)
        t0, busy0 = vclock.now_us(), totals[1] + totals[2]
        _run(dev, 2.0)
        dev.measure_load()
        vclock.cpu_totals(totals)
        charged = (totals[1] + totals[2] - busy0) * 100 / (vclock.now_us() - t0)
    finally:
        vclock.cpu_stop()
    near(dev.load_pct, charged, 3, "loop load vs what the probe charged, %")
    eq(dev.load_pct > 5, True, "a loop that computes is not idle")
    rec = dev.status_record()
    eq(rec[1], packet.STATUS_VERSION, "STATUS version")
    eq(rec[19], dev.load_pct, "STATUS loop_load")
