# The sampling loop: the one place that owns time.
#
# Paced by the IMU's FIFO (the sensor clock is the time base): each batch of gyro+accel pairs runs the attitude
# estimator and the twitch detector per IMU sample (833 Hz), reads the needle sensors every HALL_DIV-th sample
# (416 Hz), and emits protocol samples into the ring at the configured output rate (default 200 Hz) with a
# fractional decimator, so the average rate is exact. Every sample is stamped with the device time of the IMU
# sample it was computed from.
#
# Steady state allocates nothing: all state is preallocated here or in the estimators. A sensor that fails
# (OSError on the bus, stuck data) raises its flag and is re-probed every REPROBE_US; while the IMU is down the
# loop keeps emitting samples paced by ticks_us(), flagged IMU_FAULT|STALE, so a lost signal looks lost.
import time
from micropython import const

import packet
from events import PassDetector, TwitchDetector, nogo_flags

IMU_ODR_HZ = const(833)
IMU_PERIOD_US = const(1200)  # 1 / 833 Hz, to the microsecond
HALL_DIV = const(2)
WATERMARK_PAIRS = const(8)  # a batch every ~9.6 ms
MAX_PAIRS = const(32)  # FIFO words read per batch at most (x2 words per pair)
REPROBE_US = const(500000)
NO_DATA_US = const(50000)  # no IMU sample for this long: the IMU is down
_STUCK_SAMPLES = const(64)  # identical accelerometer words in a row: a real sensor's noise never does this
_DEPTH_INVALID = const(-0x20000000)  # depth.INVALID
_HALL_POR = const(0x10)  # tmag5273.STATUS_POR


class Config:
    # What the loop needs from the device configuration, in loop units.
    def __init__(self, guide_mdeg=30000, nogo_um=-1, margin_um=3000, rate_hz=200, exit_z_um=0, sin_g_q14=8192):
        self.guide_mdeg = guide_mdeg
        self.nogo_um = nogo_um
        self.margin_um = margin_um
        self.rate_hz = rate_hz
        self.exit_z_um = exit_z_um
        self.sin_g_q14 = sin_g_q14  # sin(guide angle) in Q14, computed once when the guide angle is set


def tip_depth_um(exit_z_um, depth_um, sin_g_q14):
    # exit_z + depth * sin(g), split so no product reaches 2^30 for |depth| < 2^18 um (262 mm).
    return exit_z_um + depth_um * (sin_g_q14 >> 4) // 1024 + ((depth_um * (sin_g_q14 & 15)) >> 14)


class SamplingLoop:
    def __init__(self, imu, hall, attitude, depth, ring, config, axes=(0, 1, 2), signs=(1, 1, 1), wdt=None):
        self.imu = imu
        self.hall = hall  # sequence of (driver or None) for sensors A and B
        self.att = attitude
        self.depth = depth
        self.ring = ring
        self.cfg = config
        self.wdt = wdt
        self.ax0, self.ax1, self.ax2 = axes
        self.sg0, self.sg1, self.sg2 = signs
        self.twitch = TwitchDetector()
        self.passes = PassDetector()
        self.raw = imu.raw_pairs(MAX_PAIRS)  # preallocated by the driver: MAX_PAIRS x (gx gy gz ax ay az)
        self.hx = [0, 0]
        self.hset = [-1, -1]
        self.hz = [0, 0]
        self.htemp = 2500
        self.seq = 0
        self.acc = 0  # output decimator accumulator, in Hz units
        self.k = 0  # IMU sample counter modulo HALL_DIV
        self.pending = 0  # event flags latched since the last output sample
        self.imu_ok = 1
        self.hall_ok = [1 if hall[0] is not None else 0, 1 if len(hall) > 1 and hall[1] is not None else 0]
        self.last_probe = time.ticks_us()
        self.last_out = time.ticks_us()
        self.last_data = self.last_out
        self.same = 0
        self.lax = 0
        self.lay = 0
        self.laz = 0
        self.fresh = 0  # IMU samples since the last output
        self.extra_flags = 0  # set by the owner: UNCALIBRATED, LOW_BATTERY
        self.overruns = 0
        self.samples = 0
        self.last_flags = 0

    # -- one step ----------------------------------------------------------------------------------------

    def step(self):
        # Process whatever the FIFO holds (or, with the IMU down, emit a paced fault sample); then wait for
        # the next batch. Returns the number of output samples emitted.
        if self.wdt is not None:
            self.wdt.feed()
        if not self.imu_ok:
            return self._step_without_imu()
        try:
            n = self.imu.read_pairs(self.raw, MAX_PAIRS)
            if self.imu.overrun:
                self.overruns += 1
        except OSError:
            self._imu_lost()
            return 0
        t_read = time.ticks_us()
        if n == 0:
            # A chip that re-powered (brownout, reconnected) sits unconfigured and silent: treat as lost.
            if time.ticks_diff(t_read, self.last_data) > NO_DATA_US:
                self._imu_lost()
                return 0
        else:
            self.last_data = t_read
        emitted = 0
        for j in range(n):
            t = time.ticks_add(t_read, -(n - 1 - j) * IMU_PERIOD_US)
            emitted += self._imu_sample(j, t)
        # Wait for the next batch: what the FIFO still lacks of a watermark's worth, less the time spent here.
        missing = WATERMARK_PAIRS - n if n < WATERMARK_PAIRS else WATERMARK_PAIRS
        wait = missing * IMU_PERIOD_US - time.ticks_diff(time.ticks_us(), t_read)
        if wait > 0:
            time.sleep_us(wait)
        return emitted

    def _imu_sample(self, j, t):
        r = self.raw
        b = j * 6
        gx = r[b + self.ax0] * self.sg0
        gy = r[b + self.ax1] * self.sg1
        gz = r[b + self.ax2] * self.sg2
        ax = r[b + 3 + self.ax0] * self.sg0
        ay = r[b + 3 + self.ax1] * self.sg1
        az = r[b + 3 + self.ax2] * self.sg2
        if ax == self.lax and ay == self.lay and az == self.laz:
            self.same += 1
            if self.same >= _STUCK_SAMPLES:
                self._imu_lost()
                return 0
        else:
            self.same = 0
            self.lax = ax
            self.lay = ay
            self.laz = az
        self.att.update(gx, gy, gz, ax, ay, az)
        if self.twitch.update(gx, gy, gz, ax, ay, az):
            self.pending |= packet.F_TWITCH
        self.fresh += 1
        self.k += 1
        if self.k >= HALL_DIV:
            self.k = 0
            self._read_hall()
        self.acc += self.cfg.rate_hz
        if self.acc >= IMU_ODR_HZ:
            self.acc -= IMU_ODR_HZ
            self._emit(t)
            return 1
        return 0

    def _read_hall(self):
        fresh = 0
        for i in range(2):
            h = self.hall[i] if i < len(self.hall) else None
            if h is None:
                continue
            if not self.hall_ok[i]:
                now = time.ticks_us()
                if time.ticks_diff(now, self.last_probe) >= REPROBE_US:
                    self._reprobe_hall(i, now)
                continue
            try:
                st = h.read()
                if st & _HALL_POR:
                    h.setup()  # it lost power and with it its configuration
                    continue
                sets = st >> 5  # SET_COUNT: a new conversion set, or the previous one again
            except OSError:
                self.hall_ok[i] = 0
                self.last_probe = time.ticks_us()
                fresh = 1
                continue
            if sets != self.hset[i]:
                self.hset[i] = sets
                self.hx[i] = h.x
                self.hz[i] = h.z
                if i == 0:
                    self.htemp = h.temp_cdeg
                fresh = 1
        if not fresh:
            return
        # An absent sensor reads as no field, which the depth estimator rejects for that sensor alone.
        xa = self.hx[0] if self.hall_ok[0] else 0
        za = self.hz[0] if self.hall_ok[0] else 0
        xb = self.hx[1] if self.hall_ok[1] else 0
        zb = self.hz[1] if self.hall_ok[1] else 0
        d = self.depth.update(xa, za, xb, zb, self.htemp)
        if d == _DEPTH_INVALID:
            self.passes.invalidate()
        elif self.passes.update(d):
            self.pending |= packet.F_PASS

    def _reprobe_hall(self, i, now):
        self.last_probe = now
        try:
            self.hall[i].init()
            self.hall_ok[i] = 1
        except OSError:
            pass

    # -- output --------------------------------------------------------------------------------------------

    def _flags(self):
        f = self.pending | self.extra_flags
        self.pending = 0
        if not self.imu_ok:
            f |= packet.F_IMU_FAULT
        if (self.hall[0] is not None and not self.hall_ok[0]) or (
                len(self.hall) > 1 and self.hall[1] is not None and not self.hall_ok[1]):
            f |= packet.F_HALL_FAULT
        if self.fresh == 0:
            f |= packet.F_STALE
        self.fresh = 0
        return f

    def _emit(self, t):
        cfg = self.cfg
        f = self._flags()
        if self.imu_ok:
            if self.att.moving:
                f |= packet.F_MOVING
            if self.att.settling:
                f |= packet.F_SETTLING
            needle = packet.to_cdeg(self.att.needle_angle_mdeg(cfg.guide_mdeg))
            pitch = packet.to_cdeg(self.att.pitch_mdeg())
            roll = packet.to_cdeg(self.att.roll_mdeg())
        else:
            needle = pitch = roll = packet.NA
        d = self.depth.depth_um
        if d == _DEPTH_INVALID:
            f |= packet.F_DEPTH_INVALID
            depth = tip = packet.NA
        else:
            tip_um = tip_depth_um(cfg.exit_z_um, d, cfg.sin_g_q14)
            f |= nogo_flags(tip_um, cfg.nogo_um, cfg.margin_um)
            depth = packet.to_d10um(d)
            tip = packet.to_d10um(tip_um)
        packet.pack_sample(self.ring.buf, self.ring.slot(), self.seq, t, needle, packet.to_cdeg(cfg.guide_mdeg),
                           depth, tip, pitch, roll, f)
        self.seq = (self.seq + 1) & 0xFFFF
        self.samples += 1
        self.last_flags = f
        self.last_out = t

    # -- the IMU down ------------------------------------------------------------------------------------------

    def _imu_lost(self):
        self.imu_ok = 0
        self.same = 0
        self.last_probe = time.ticks_us()

    def _step_without_imu(self):
        # Keep the stream alive at the output rate on the tick clock, with depth still live.
        period = 1000000 // self.cfg.rate_hz
        now = time.ticks_us()
        wait = period - time.ticks_diff(now, self.last_out)
        if wait > 0:
            time.sleep_us(wait)
            now = time.ticks_us()
        if time.ticks_diff(now, self.last_probe) >= REPROBE_US:
            self.last_probe = now
            try:
                self.imu.init()
                self.imu_ok = 1
                self.last_data = now
                self.att.reset()
            except OSError:
                pass
        self._read_hall()
        self._emit(now)
        return 1
