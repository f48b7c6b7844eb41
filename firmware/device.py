# The device: the board's pin map, the sensors, the stored configuration and calibration, the estimators, the
# sampling loop and its links, and what control commands act on.
#
# Boot banner (one line, parsed by `needletrack flash` and the QA suite):
#   NeedleTrack <version> board=<name> micropython=<x.y.z> imu=<ok|missing> hall_a=<..> hall_b=<..>
#     cal=<factory|id hex> config=<store status>
import gc
import math
import sys
import time

import machine

import boards
import log
import packet
import store
import watchdog
from attitude import Attitude
from battery import Battery
from control import Control
from depth import DepthEstimator
from drivers.lsm6dsox import LSM6DSOX
from drivers.tmag5273 import TMAG5273
from feedback import Feedback
from loop import MAX_PAIRS, WATERMARK_PAIRS, Config, SamplingLoop, imu_odr_for, nominal_odr_mhz
from ring import SampleRing

VERSION = "0.1.0"
STATUS_EVERY_MS = 1000


def _probe(drv):
    # A sensor missing at boot is reported, flagged, and re-probed by the loop until it answers; not fatal.
    try:
        drv.init()
        return "ok"
    except OSError as e:
        log.note(str(e))
        return "missing"


def loop_config(cfg):
    nogo = cfg["nogo_depth_um"]
    return Config(
        guide_mdeg=cfg["guide_angle_mdeg"],
        nogo_um=nogo if nogo > 0 else -1,
        margin_um=cfg["nogo_margin_um"],
        rate_hz=cfg["rate_hz"],
        exit_z_um=0,  # the guide exit sits in the plane of the transducer face
        # Once per configuration change, not per sample: float is fine here.
        sin_g_q14=int(math.sin(math.radians(cfg["guide_angle_mdeg"] / 1000)) * 16384 + 0.5),
    )


class Device:
    def __init__(self):
        self.board = boards.select()
        b = self.board
        self.booted_ms = time.ticks_ms()
        self.i2c = machine.I2C(b.I2C_ID, scl=machine.Pin(b.I2C_SCL), sda=machine.Pin(b.I2C_SDA), freq=b.I2C_FREQ)
        self.cfg, self.cfg_status = store.load_config()
        self.imu_odr_hz = imu_odr_for(self.cfg["rate_hz"])  # the IMU's ODR setting, as the datasheet names it
        self.imu = LSM6DSOX(self.i2c, b.IMU_ADDR, odr_hz=self.imu_odr_hz, watermark=2 * WATERMARK_PAIRS,
                            max_words=2 * MAX_PAIRS, probe=False)
        self.hall_a = TMAG5273(self.i2c, b.HALL_A_ADDR, probe=False)
        self.hall_b = TMAG5273(self.i2c, b.HALL_B_ADDR, probe=False)
        self.imu_status = _probe(self.imu)
        self.hall_a_status = _probe(self.hall_a)
        self.hall_b_status = _probe(self.hall_b)
        self.battery = Battery(b.BATTERY_ADC, b.BATTERY_DIVIDER)
        self.battery.read()
        cal, self.cal_status = store.load_calibration()
        self.depth = DepthEstimator()
        self.cal = cal
        self.cal_id = store.calibration_id(cal) if self.cal_status == store.OK else 0
        self.depth.load(cal)
        self.depth.set_tare(self.cfg["tare_um"])
        # The chip's real output rate (e.g. 833.375 Hz, trimmed per part), not the 833 of its setting's name.
        odr_mhz = self.imu.odr_mhz() if self.imu_status == "ok" else nominal_odr_mhz(self.imu_odr_hz)
        self.att = Attitude(dt_s=1000.0 / odr_mhz)
        self.ring = SampleRing(256)
        self.loop = SamplingLoop(self.imu, (self.hall_a, self.hall_b), self.att, self.depth, self.ring,
                                 loop_config(self.cfg), b.IMU_AXES, b.IMU_SIGNS, odr_mhz=odr_mhz)
        if self.imu_status != "ok":
            self.loop.imu_ok = 0
        if self.hall_a_status != "ok":
            self.loop.hall_ok[0] = 0
        if self.hall_b_status != "ok":
            self.loop.hall_ok[1] = 0
        if self.cal_status != store.OK:
            self.loop.extra_flags |= packet.F_UNCALIBRATED
        self.control = Control(self)
        self.feedback = Feedback(b.LED_PIN, b.MOTOR_PIN)
        self.config_buf = bytearray(packet.CONFIG_SIZE)
        self.status_buf = bytearray(packet.STATUS_SIZE)
        self.links = []
        self.load_pct = 255  # share of the last housekeeping period the loop was busy; 255 until measured
        self.load_from = time.ticks_us()
        self.wdt = None
        self.version = VERSION

    def banner(self):
        impl = sys.implementation
        cal = "factory" if self.cal_status != store.OK else "%04x" % self.cal_id
        return "NeedleTrack %s board=%s micropython=%d.%d.%d imu=%s hall_a=%s hall_b=%s cal=%s config=%s" % (
            VERSION, self.board.NAME, impl.version[0], impl.version[1], impl.version[2], self.imu_status,
            self.hall_a_status, self.hall_b_status, cal, self.cfg_status)

    # -- what control commands change --------------------------------------------------------------------

    def apply_config(self, cfg):
        odr_hz = imu_odr_for(cfg["rate_hz"])
        if odr_hz != self.imu_odr_hz:
            self.set_imu_odr(odr_hz)  # first: the samples still in the FIFO go out at the old rate
        self.cfg = cfg
        self.loop.cfg = loop_config(cfg)
        self.depth.set_tare(cfg["tare_um"])

    def set_imu_odr(self, odr_hz):
        # The IMU at another ODR setting, between sampling batches. Reconfiguring empties the FIFO, so what it holds
        # is processed first; then the loop (sample spacing, Hall divider, decimator, twitch timing, the attitude
        # filter's dt) follows the chip's true rate. An IMU that does not answer is re-probed at the new ODR.
        loop = self.loop
        loop.drain()
        self.imu_odr_hz = odr_hz
        odr_mhz = nominal_odr_mhz(odr_hz)
        try:
            self.imu.set_odr(odr_hz)
            odr_mhz = self.imu.odr_mhz()
        except OSError:
            if loop.imu_ok:
                loop.imu_lost()
        loop.set_odr(odr_mhz)

    def apply_calibration(self, cal):
        self.depth.load(cal)
        self.cal = cal
        self.cal_status = store.OK
        self.cal_id = store.calibration_id(cal)
        self.loop.extra_flags &= ~packet.F_UNCALIBRATED

    def calibration_id(self):
        # Worked out once per calibration: the STATUS record asks for it every second, and the CRC allocates.
        return self.cal_id if self.cal_status == store.OK else 0

    def config_record(self):
        c = self.cfg
        nogo = c["nogo_depth_um"]
        d10 = packet.to_d10um
        packet.pack_config(self.config_buf, c["guide_angle_mdeg"] // 10, c["needle_length_um"] // 100,
                           d10(nogo) if nogo > 0 else packet.NA, d10(c["nogo_margin_um"]), c["rate_hz"],
                           self.calibration_id(), len(self.cal["sensors"][0]["angle_mdeg"]), d10(c["tare_um"]))
        return self.config_buf

    def dropped(self):
        # Samples lost by the link a host is connected on (STATUS reports that one).
        for link in self.links:
            if getattr(link, "conn", None) is not None:
                return link.ring.dropped
        return 0

    def state(self):
        if not self.loop.imu_ok:
            return packet.ST_FAULT
        if self.control.calibrating:
            return packet.ST_CALIBRATING
        return packet.ST_RUNNING

    def status_record(self):
        loop = self.loop
        uptime_s = time.ticks_diff(time.ticks_ms(), self.booted_ms) // 1000
        packet.pack_status(self.status_buf, self.state(), self.battery.pct, self.battery.mv, loop.last_flags,
                           self.dropped(), loop.cfg.rate_hz, self.calibration_id(), loop.overruns, uptime_s,
                           self.load_pct)
        return self.status_buf

    # -- running -------------------------------------------------------------------------------------------

    def start(self):
        self.wdt = watchdog.take_over()
        self.loop.wdt = self.wdt
        gc.collect()
        self.load_from = time.ticks_us()  # the loop's load is measured from here
        self.loop.take_slept_us()

    def stop(self):
        # Back to the REPL: keep the board alive for whoever is at the console.
        self.loop.wdt = None
        watchdog.keep_alive(self.board.FEED_TIMER_ID)

    def housekeeping(self):
        # About once a second, between sampling batches.
        self.measure_load()
        self.battery.read()
        if self.battery.low:
            self.loop.extra_flags |= packet.F_LOW_BATTERY
        else:
            self.loop.extra_flags &= ~packet.F_LOW_BATTERY

    def measure_load(self):
        # The loop's load: the share of the time since the last measurement it did not sleep (compute, I2C,
        # the links), as a percentage; what a board reports of itself in STATUS.
        now = time.ticks_us()
        elapsed = time.ticks_diff(now, self.load_from)
        slept = self.loop.take_slept_us()
        self.load_from = now
        if elapsed > 0:
            busy = elapsed - slept
            self.load_pct = 0 if busy <= 0 else (100 if busy >= elapsed else busy * 100 // elapsed)

    def connected(self):
        for link in self.links:
            if getattr(link, "conn", None) is not None:
                return True
        return False

    def run(self):
        loop = self.loop
        links = self.links
        control = self.control
        next_housekeeping = time.ticks_add(time.ticks_ms(), STATUS_EVERY_MS)
        while True:
            loop.process()
            for link in links:
                link.service()  # what the batch emitted leaves now, not after the wait for the next one
            if control.identify_s:
                self.feedback.identify(control.identify_s)
                control.identify_s = 0
            self.feedback.update(loop.last_flags, self.connected())
            if time.ticks_diff(time.ticks_ms(), next_housekeeping) >= 0:
                next_housekeeping = time.ticks_add(next_housekeeping, STATUS_EVERY_MS)
                self.housekeeping()
            if self.control.reboot_pending:
                time.sleep_ms(100)  # let the RESULT go out
                machine.reset()
            loop.wait()
