# NeedleTrack firmware: wires the board's pin map, the sensors, the stored configuration and calibration, the
# estimators, the sampling loop and the links, then runs the loop until interrupted.
#
# Boot banner (one line, parsed by `needletrack flash` and the QA suite):
#   NeedleTrack <version> board=<name> micropython=<x.y.z> imu=<ok|missing> hall_a=<..> hall_b=<..>
#     cal=<factory|id hex> config=<store status>
import gc
import sys

import machine

import boards
import packet
import store
from attitude import Attitude
from depth import DepthEstimator
from drivers.lsm6dsox import LSM6DSOX
from drivers.tmag5273 import TMAG5273
from loop import MAX_PAIRS, WATERMARK_PAIRS, Config, SamplingLoop
from ring import SampleRing
from serial_link import SerialLink

VERSION = "0.1.0"
WDT_TIMEOUT_MS = 2000


def _probe(drv):
    # A sensor missing at boot is reported, flagged, and re-probed by the loop until it answers; not fatal.
    try:
        drv.init()
        return "ok"
    except OSError as e:
        print("#", e)
        return "missing"


def _sin_q14(mdeg):
    # Once per configuration change, not per sample: float is fine here.
    import math
    return int(math.sin(math.radians(mdeg / 1000)) * 16384 + 0.5)


def loop_config(cfg):
    nogo = cfg["nogo_depth_um"]
    return Config(
        guide_mdeg=cfg["guide_angle_mdeg"],
        nogo_um=nogo if nogo > 0 else -1,
        margin_um=cfg["nogo_margin_um"],
        rate_hz=cfg["rate_hz"],
        exit_z_um=0,  # the guide exit sits in the plane of the transducer face
        sin_g_q14=_sin_q14(cfg["guide_angle_mdeg"]),
    )


class Device:
    def __init__(self):
        self.board = boards.select()
        b = self.board
        self.i2c = machine.I2C(b.I2C_ID, scl=machine.Pin(b.I2C_SCL), sda=machine.Pin(b.I2C_SDA), freq=b.I2C_FREQ)
        self.imu = LSM6DSOX(self.i2c, b.IMU_ADDR, watermark=2 * WATERMARK_PAIRS, max_words=2 * MAX_PAIRS,
                            probe=False)
        self.hall_a = TMAG5273(self.i2c, b.HALL_A_ADDR, probe=False)
        self.hall_b = TMAG5273(self.i2c, b.HALL_B_ADDR, probe=False)
        self.imu_status = _probe(self.imu)
        self.hall_a_status = _probe(self.hall_a)
        self.hall_b_status = _probe(self.hall_b)
        self.cfg, self.cfg_status = store.load_config()
        self.cal, self.cal_status = store.load_calibration()
        self.depth = DepthEstimator()
        self.depth.load(self.cal)
        self.depth.set_tare(self.cfg["tare_um"])
        self.att = Attitude()
        self.ring = SampleRing(256)
        self.serial = SerialLink(self.ring)
        self.wdt = None

    def banner(self):
        impl = sys.implementation
        cal = "factory" if self.cal_status != store.OK else "%04x" % store.calibration_id(self.cal)
        return "NeedleTrack %s board=%s micropython=%d.%d.%d imu=%s hall_a=%s hall_b=%s cal=%s config=%s" % (
            VERSION, self.board.NAME, impl.version[0], impl.version[1], impl.version[2], self.imu_status,
            self.hall_a_status, self.hall_b_status, cal, self.cfg_status)

    def start(self):
        loop = SamplingLoop(self.imu, (self.hall_a, self.hall_b), self.att, self.depth, self.ring,
                                 loop_config(self.cfg), self.board.IMU_AXES, self.board.IMU_SIGNS)
        if self.imu_status != "ok":
            loop.imu_ok = 0
        for i, status in enumerate((self.hall_a_status, self.hall_b_status)):
            if status != "ok":
                loop.hall_ok[i] = 0
        if self.cal_status != store.OK:
            loop.extra_flags |= packet.F_UNCALIBRATED
        self.wdt = machine.WDT(timeout=WDT_TIMEOUT_MS)
        loop.wdt = self.wdt
        gc.collect()
        return loop

    def run(self, loop):
        serial = self.serial
        while True:
            loop.step()
            serial.service()


def main():
    dev = Device()
    print(dev.banner())
    loop = dev.start()
    try:
        dev.run(loop)
    except KeyboardInterrupt:
        print("# stopped")


main()
