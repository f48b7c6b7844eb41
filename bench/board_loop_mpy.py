# The firmware's loop on this machine's MicroPython, scaled to an RP2040 at 125 MHz by kernel.py's "call" part
# measured in the same run: per IMU sample, the sampling loop alone and with what the device does beside it each
# batch (its links, the feedback), and per call the parts the RP2040 emulator measured one by one. Run by
# bench_board_load.py:
#
#   MICROPYPATH=host_tools/needletrack/sim/mpy micropython bench/board_loop_mpy.py REPO BOARD
#
# Prints one JSON object. Compute only: the CPU model charges no bus time here (bus time is the I2C's, apart).
import json
import os
import sys

import cpuscale
import vboard
import vclock

REPO = sys.argv[1]
BOARD = sys.argv[2] if len(sys.argv) > 2 else "xiao_esp32s3"
sys.path.insert(0, REPO + "/firmware")
sys.path.insert(0, REPO + "/tests/firmware")
MCU = cpuscale.rp2040_figures(REPO + "/host_tools/needletrack/sim/mpy/kernel-rp2040.json")

import ble_link  # noqa: E402
import depth_model  # noqa: E402
import device  # noqa: E402
import flashfs  # noqa: E402
import serial_link  # noqa: E402
import store  # noqa: E402
from lsm6dsox_emu import LSM6DSOXEmu  # noqa: E402
from tmag5273_emu import TMAG5273Emu  # noqa: E402
from vsources import HallAt, ImuAtRest  # noqa: E402

__import__("boards." + BOARD)
vclock.cpu_us()  # opens /proc/thread-self/schedstat
ROOT = f"/tmp/nt-board-loop-{vclock._host_time.ticks_us() & 0xFFFFFF}"
os.mkdir(ROOT)
flashfs.mount_root(ROOT)
with open("/board", "w") as f:
    f.write(BOARD)

vboard.reset()
vclock.reset(0)
vboard.board.clock = vclock.now_us
EMUS = (LSM6DSOXEmu(0x6A, ImuAtRest()), TMAG5273Emu("A1", source=HallAt(20.0, depth_model.S_A_MM)),
        TMAG5273Emu("B1", source=HallAt(20.0, depth_model.S_B_MM)))
for e in EMUS:
    vboard.attach(0, e, e.addr)
store.save_calibration(depth_model.calibration())
DEV = device.Device()
DEV.links.append(serial_link.SerialLink(DEV.ring))
DEV.links.append(ble_link.BleLink(DEV, firmware=DEV.version))
LOOP = DEV.loop
TOTALS = [0, 0, 0, 0]
N = 1000


def _charged_host_us(fn, arg):
    # Host us of firmware compute that fn(arg) was charged, and the IMU samples it processed.
    vclock.cpu_model(1024)
    vclock.set_scale(1024, OVERHEAD_NS)
    before = EMUS[0].words_read
    vclock.enter()
    vclock.leave()
    vclock.cpu_totals(TOTALS)
    a = TOTALS[0]
    fn(arg)
    vclock.enter()
    vclock.leave()
    vclock.cpu_totals(TOTALS)
    vclock.cpu_stop()
    return (TOTALS[0] - a) / 1000, (EMUS[0].words_read - before) // 2


def loop_alone(batches):
    for _ in range(batches):
        LOOP.process()
        LOOP.wait()


def device_batch(batches):
    links = DEV.links
    for _ in range(batches):
        LOOP.process()
        for link in links:
            link.service()
        DEV.feedback.update(LOOP.last_flags, DEV.connected())
        LOOP.wait()


def _parts():
    att = LOOP.att
    dep = LOOP.depth
    hx, hz = LOOP.hx, LOOP.hz
    import packet
    buf = bytearray(20)

    def f_att(n):
        for _ in range(n):
            att.update(3, -2, 1, 10, -20, 4096)

    def f_needle(n):
        for _ in range(n):
            att.needle_angle_mdeg(30000)

    def f_pitch(n):
        for _ in range(n):
            att.pitch_mdeg()

    def f_roll(n):
        for _ in range(n):
            att.roll_mdeg()

    def f_depth(n):
        for _ in range(n):
            dep.update(hx[0], hz[0], hx[1], hz[1], 2500)

    def f_pack(n):
        for i in range(n):
            packet.pack_sample(buf, 0, i & 0xFFFF, i, 3000, 3000, 1234, 1000, 10, 20, 0)

    return (("Attitude.update", f_att), ("needle_angle_mdeg", f_needle), ("pitch_mdeg", f_pitch),
            ("roll_mdeg", f_roll), ("DepthEstimator.update", f_depth), ("packet.pack_sample", f_pack))


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


loop_alone(100)  # warm up: sensors converting, estimators settled
OVERHEAD_NS = cpuscale.call_overhead_ns()
out = {"board": BOARD, "per_imu_sample_us": {}, "per_call_us": {}, "call_ratio": []}
runs = {"loop": [], "device": []}
parts = {name: [] for name, _ in _parts()}
for _ in range(5):
    # Each block beside its own kernel measurement: this machine's speed changes from moment to moment.
    ratio = cpuscale.measure(MCU, 1)[cpuscale.SCALE_PART]
    out["call_ratio"].append(ratio)
    for key, fn in (("loop", loop_alone), ("device", device_batch)):
        host, samples = _charged_host_us(fn, 150)
        runs[key].append(host / samples * ratio)
    for name, fn in _parts():
        host, _ = _charged_host_us(fn, N)
        parts[name].append(host / N * ratio)
out["per_imu_sample_us"] = {k: _median(v) for k, v in runs.items()}
out["per_call_us"] = {k: _median(v) for k, v in parts.items()}
print(json.dumps(out))
