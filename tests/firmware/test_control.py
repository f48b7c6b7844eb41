# Control commands on a whole device on the virtual board: every command's valid and invalid forms, and that a
# refused command changes nothing, in memory or on the flash filesystem.
# mp-heapsize: 4M
import os
import struct

import depth_model
import vboard
import vclock
import flashfs
import machine  # noqa: F401 - the virtual board's, loaded before the flash filesystem hides its directory
import boards.xiao_esp32s3  # noqa: F401 - the pin map select() will import
import device
import packet
import store
from lsm6dsox_emu import LSM6DSOXEmu
from tmag5273_emu import TMAG5273Emu
from vsources import HallAt, ImuAtRest
from mptest import eq

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
        (packet.OP_SET_OUTPUT_RATE, "H", (401,), packet.R_OUT_OF_RANGE),
        (packet.OP_IDENTIFY, "B", (0,), packet.R_OUT_OF_RANGE),
        (packet.OP_IDENTIFY, "B", (11,), packet.R_OUT_OF_RANGE),
        (packet.OP_TARE, "B", (1,), packet.R_BAD_LENGTH),
        (0x7E, "", (), packet.R_UNKNOWN_OPCODE),
        (packet.OP_CAL_POINT, "h", (1000,), packet.R_BAD_STATE),  # not calibrating
        (packet.OP_CAL_COMMIT, "", (), packet.R_BAD_STATE),
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


def test_tare_makes_the_current_depth_zero():
    dev = _device()
    code, value, _ = _cmd(dev, packet.OP_TARE)
    eq(code, packet.R_OK)
    assert 19500 < value < 20500, value  # the carriage displacement that became zero, um
    _run(dev, 0.2)
    assert abs(dev.depth.depth_um) < 300, dev.depth.depth_um
    eq(store.load_config()[0]["tare_um"], value)


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
    for i, mm in enumerate(jig):
        HALL_A.move_to(mm)
        HALL_B.move_to(mm)
        _run(dev, 0.1)
        if i == 3:
            eq(_cmd(dev, packet.OP_CAL_COMMIT)[:2], (packet.R_BAD_STATE, 3))  # too few points yet
        code, angle, _ = _cmd(dev, packet.OP_CAL_POINT, "h", int(mm * 100))
        eq(code, packet.R_OK, "jig point %g mm" % mm)
        assert -180000 < angle <= 180000
    code, cal_id, _ = _cmd(dev, packet.OP_CAL_COMMIT)
    eq(code, packet.R_OK)
    assert 0 < cal_id < 65536
    eq(dev.loop.extra_flags & packet.F_UNCALIBRATED, 0)
    eq(dev.state(), packet.ST_RUNNING)
    cal, status = store.load_calibration()
    eq(status, store.OK)
    eq(store.calibration_id(cal), cal_id)
    HALL_A.move_to(33.0)
    HALL_B.move_to(33.0)
    _run(dev, 0.2)
    # This clip's field (a point dipole) differs in shape from the factory table (a cylinder magnet); the fit
    # of that table to the jig must bring the depth much closer than the table alone.
    err = abs(dev.depth.depth_um - 33000)
    assert err < 500 and err < factory_err / 2, (err, factory_err)


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
