# The sampling loop: the one place that owns time.
#
# Paced by the IMU's FIFO (the sensor clock is the time base): each batch of gyro+accel pairs runs the attitude
# estimator and the twitch detector per IMU sample, reads the needle sensors every hall_div-th sample (~416 Hz),
# and emits protocol samples into the ring at the configured output rate (default 200 Hz) with a fractional
# decimator on the chip's true ODR, so the average rate is exact. The IMU runs at the ODR the output rate needs
# (imu_odr_for): 833 Hz up to 416 Hz out, 1666 Hz above, up to 1000 Hz. Every sample is stamped with the device
# time of the IMU sample it was computed from.
#
# Steady state allocates nothing: all state is preallocated here or in the estimators. A sensor that fails
# (OSError on the bus, stuck data) raises its flag and is re-probed every REPROBE_US; while the IMU is down the
# loop keeps emitting samples paced by ticks_us(), flagged IMU_FAULT|STALE, so a lost signal looks lost.
import time
from micropython import const

import packet
from events import PassDetector, TwitchDetector, nogo_flags

HALL_HZ = const(416)  # needle sensor reads per second at every ODR
WATERMARK_PAIRS = const(8)  # a batch every ~9.6 ms at 833 Hz, ~4.8 ms at 1666 Hz
MAX_PAIRS = const(32)  # FIFO words read per batch at most (x2 words per pair)
REPROBE_US = const(500000)
NO_DATA_US = const(50000)  # no IMU sample for this long: the IMU is down
_STUCK_SAMPLES = const(64)  # identical accelerometer words in a row: a real sensor's noise never does this
_DEPTH_INVALID = const(-0x20000000)  # depth.INVALID
_HALL_POR = const(0x10)  # tmag5273.STATUS_POR
_HALL_STUCK = const(16)  # new conversions in a row with the very same X and Z: stuck needle-sensor data
_HALL_SILENT_US = const(100000)  # no new conversion for this long (it converts every few ms): lost


def imu_odr_for(rate_hz):
    """The LSM6DSOX ODR setting (Hz, as its datasheet names it) an output rate needs: 833 up to 416 Hz, so every
    output sample has two IMU samples or more behind it; 1666 above, which feeds up to 1000 Hz."""
    return 833 if rate_hz <= 416 else 1666


def nominal_odr_mhz(odr_hz):
    """The untrimmed rate of an ODR setting, mHz: 6667 Hz / 2^n (the "833 Hz" setting is 833.375 Hz)."""
    return 6667000 // ((6667 + odr_hz // 2) // odr_hz)


def _at_rail(v):
    # An int16 result at full scale: the field is beyond the range (saturated), not merely repeating.
    return v >= 32767 or v <= -32768


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
    def __init__(self, imu, hall, attitude, depth, ring, config, axes=(0, 1, 2), signs=(1, 1, 1), wdt=None,
                 odr_mhz=833375):
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
        self.hnew = [0, 0]  # a conversion read since the sensor was (re)configured: its hx/hz are its own
        self.hsame = [0, 0]  # conversions in a row with the very same field: stuck data
        self.hbad = [0, 0]  # failed, and no good conversion since
        self.hlast = [time.ticks_us(), time.ticks_us()]  # when each sensor last gave a new conversion
        self.htemp = 2500
        self.seq = 0
        self.acc = 0  # output decimator accumulator, mHz
        self.k = 0  # IMU sample counter modulo hall_div
        self.odr_mhz = 0  # the IMU's true output rate, mHz: set_odr() sets it and what follows from it
        self.period_us = 0
        self.hall_div = 1
        self.pending = 0  # event flags latched since the last output sample
        self.imu_ok = 1
        self.hall_ok = [1 if hall[0] is not None else 0, 1 if len(hall) > 1 and hall[1] is not None else 0]
        self.last_probe = time.ticks_us()
        self.last_out = time.ticks_us()
        self.last_data = self.last_out
        self.t_imu = self.last_out  # the last IMU sample's time stamp (valid once t_valid)
        self.t_valid = 0
        self.t_read = self.last_out  # when the last batch was read, and its size in pairs
        self.batch = 0
        self.same = 0
        self.lax = 0
        self.lay = 0
        self.laz = 0
        self.fresh = 0  # IMU samples since the last output
        self.extra_flags = 0  # set by the owner: UNCALIBRATED, LOW_BATTERY
        self.overruns = 0
        self.slept_us = 0  # time the loop slept since the owner last took it (take_slept_us): its idle time
        self.samples = 0
        self.last_flags = 0
        self.set_odr(odr_mhz)

    def set_odr(self, odr_mhz):
        """The IMU's true output rate in mHz (the driver's odr_mhz()): the time between IMU samples, the needle
        sensors' divider, the output decimator, the twitch detector's timing and the attitude filter's dt all
        follow it. Call between steps, with the chip already at that rate; allocates (not per sample)."""
        old = self.odr_mhz
        self.odr_mhz = odr_mhz
        self.period_us = (1000000000 + odr_mhz // 2) // odr_mhz
        self.hall_div = max(1, (odr_mhz + HALL_HZ * 500) // (HALL_HZ * 1000))
        self.k = 0
        self.t_valid = 0  # the sample clock restarts from the next read at the new period
        # The decimator keeps its phase: the next output sample comes as far along its period as it would have.
        self.acc = self.acc * odr_mhz // old if old else 0
        self.twitch.set_odr(odr_mhz)
        self.att.set_dt(1000.0 / odr_mhz)

    def take_slept_us(self):
        """Time slept since the last call (bounded: the owner takes it about once a second)."""
        s = self.slept_us
        self.slept_us = 0
        return s

    # -- one step ----------------------------------------------------------------------------------------

    def step(self):
        # Process whatever the FIFO holds, then wait for the next batch. Returns the output samples emitted.
        emitted = self.process()
        self.wait()
        return emitted

    def process(self):
        # Process whatever the FIFO holds (or, with the IMU down, emit a paced fault sample). The device sends
        # what this emitted before wait(): a sample never sits out a batch period on the device.
        if self.wdt is not None:
            self.wdt.feed()
        if not self.imu_ok:
            return self._step_without_imu()
        return self.drain()

    def wait(self):
        # Until the next batch: what the FIFO still lacks of a watermark's worth, less the time spent since the
        # read (processing, and whatever the device did in between).
        if not self.imu_ok:
            return
        n = self.batch
        missing = WATERMARK_PAIRS - n if n < WATERMARK_PAIRS else WATERMARK_PAIRS
        wait = missing * self.period_us - time.ticks_diff(time.ticks_us(), self.t_read)
        if wait > 0:
            self.slept_us += wait
            time.sleep_us(wait)

    def drain(self):
        """Process what the FIFO holds now, without waiting (e.g. before the IMU is reconfigured, which empties
        it). Returns the number of output samples emitted."""
        if not self.imu_ok:
            return 0
        # Read the clock before the FIFO: every pair the read will count was made before this instant, while a
        # read of many pairs takes milliseconds on the bus (8 pairs: 2.4 ms at 400 kHz).
        t_read = time.ticks_us()
        try:
            n = self.imu.read_pairs(self.raw, MAX_PAIRS)
            if self.imu.overrun:
                self.overruns += 1
        except OSError:
            self.imu_lost()
            return 0
        self.t_read = t_read
        self.batch = n
        if n == 0:
            # A chip that re-powered (brownout, reconnected) sits unconfigured and silent: treat as lost.
            if time.ticks_diff(t_read, self.last_data) > NO_DATA_US:
                self.imu_lost()
                return 0
        else:
            self.last_data = t_read
        emitted = 0
        for j in range(n):
            emitted += self._imu_sample(j, self._stamp(time.ticks_add(t_read, -(n - 1 - j) * self.period_us)))
        return emitted

    def _stamp(self, t_read_based):
        # The time of one IMU sample. Counting back from the read gives an upper bound (the sample was made
        # before the read), late by however long the read waited; stamping with it as is lets a late batch's
        # last sample come after the next, punctual batch's first. So stamps run on the IMU's own period and
        # follow the read-based times: up slowly (1/64 per sample: reads come late), down at once (a sample
        # already read cannot be later), but never back by more than half a period: time only moves on.
        period = self.period_us
        if not self.t_valid:  # the first sample, or the first after the IMU came back: after what was sent
            self.t_valid = 1
            if self.samples and time.ticks_diff(t_read_based, self.last_out) <= 0:
                t_read_based = time.ticks_add(self.last_out, period >> 1)
            self.t_imu = t_read_based
            return t_read_based
        predicted = time.ticks_add(self.t_imu, period)
        late = time.ticks_diff(t_read_based, predicted)
        if late >= 0:
            t = time.ticks_add(predicted, late >> 6)
        else:
            floor = time.ticks_add(self.t_imu, period >> 1)
            t = t_read_based if time.ticks_diff(t_read_based, floor) > 0 else floor
        self.t_imu = t
        return t

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
                self.imu_lost()
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
        if self.k >= self.hall_div:
            self.k = 0
            self._read_hall()
        # At most one output sample per IMU sample: rate_hz (<= 1000) stays below the ODR. acc < 2^22.
        self.acc += self.cfg.rate_hz * 1000
        if self.acc >= self.odr_mhz:
            self.acc -= self.odr_mhz
            self._emit(t)
            return 1
        return 0

    def _read_hall(self):
        fresh = 0
        now = time.ticks_us()
        for i in range(2):
            h = self.hall[i] if i < len(self.hall) else None
            if h is None:
                continue
            if not self.hall_ok[i]:
                if time.ticks_diff(now, self.last_probe) >= REPROBE_US:
                    self._reprobe_hall(i, now)
                continue
            try:
                st = h.read()
                if st & _HALL_POR:
                    h.setup()  # it lost power and with it its configuration
                    self.hnew[i] = 0
                    self.hlast[i] = now
                    fresh = 1
                    continue
                sets = st >> 5  # SET_COUNT: a new conversion set, or the previous one again
            except OSError:
                self._hall_lost(i, now)
                fresh = 1
                continue
            if sets != self.hset[i]:
                self.hset[i] = sets
                x = h.x
                z = h.z
                # A real sensor's noise never repeats the same field for this long: the data are stuck. A field at
                # the rails repeats too, but that is saturation, which the depth estimator flags as such.
                same = x == self.hx[i] and z == self.hz[i] and not _at_rail(x) and not _at_rail(z)
                if same and (self.hnew[i] or self.hsame[i] >= _HALL_STUCK):
                    # (after a stuck fault hsame stays at the limit: the same field again, once re-probed, is
                    # still stuck, never a new reading)
                    self.hsame[i] += 1
                    if self.hsame[i] >= _HALL_STUCK:
                        self._hall_lost(i, now)
                        self.hsame[i] = _HALL_STUCK
                        fresh = 1
                        continue
                else:
                    self.hsame[i] = 0
                self.hx[i] = x
                self.hz[i] = z
                self.hnew[i] = 1
                self.hbad[i] = 0
                self.hlast[i] = now
                if i == 0:
                    self.htemp = h.temp_cdeg
                fresh = 1
            elif time.ticks_diff(now, self.hlast[i]) > _HALL_SILENT_US:
                self._hall_lost(i, now)  # answering, but no new conversion: as good as gone
                fresh = 1
        if not fresh:
            return
        # A sensor that is absent, or has not converted since it came back, reads as no field: the depth
        # estimator rejects it alone; the fault flag then keeps depth NA (docs/protocol.md).
        ok_a = self.hall_ok[0] and self.hnew[0]
        ok_b = self.hall_ok[1] and self.hnew[1]
        d = self.depth.update(self.hx[0] if ok_a else 0, self.hz[0] if ok_a else 0,
                              self.hx[1] if ok_b else 0, self.hz[1] if ok_b else 0, self.htemp)
        if d == _DEPTH_INVALID:
            self.passes.invalidate()
        elif self.passes.update(d):
            self.pending |= packet.F_PASS

    def _hall_lost(self, i, now):
        self.hall_ok[i] = 0
        self.hbad[i] = 1
        self.hnew[i] = 0
        self.hsame[i] = 0
        self.hset[i] = -1
        self.last_probe = now

    def _reprobe_hall(self, i, now):
        self.last_probe = now
        try:
            self.hall[i].init()
            self.hall_ok[i] = 1
            self.hlast[i] = now  # its first conversion is due within _HALL_SILENT_US
        except OSError:
            pass

    # -- output --------------------------------------------------------------------------------------------

    def _flags(self):
        f = self.pending | self.extra_flags
        self.pending = 0
        if not self.imu_ok:
            f |= packet.F_IMU_FAULT
        # A sensor that failed stays at fault until it has given a good conversion again, not only until it
        # answers a re-probe.
        if (self.hall[0] is not None and (not self.hall_ok[0] or self.hbad[0])) or (
                len(self.hall) > 1 and self.hall[1] is not None and (not self.hall_ok[1] or self.hbad[1])):
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
        if d == _DEPTH_INVALID or f & packet.F_HALL_FAULT:
            # With a needle sensor faulted the other one alone may still give a depth, but not one to show:
            # depth is NA whenever HALL_FAULT is set (docs/protocol.md).
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

    def imu_lost(self):
        # The IMU stopped answering (or its data is stuck): fault samples from now on, re-probed every REPROBE_US.
        self.imu_ok = 0
        self.same = 0
        self.t_valid = 0
        self.last_probe = time.ticks_us()

    def _step_without_imu(self):
        # Keep the stream alive at the output rate on the tick clock, with depth still live.
        period = 1000000 // self.cfg.rate_hz
        now = time.ticks_us()
        wait = period - time.ticks_diff(now, self.last_out)
        if wait > 0:
            self.slept_us += wait
            time.sleep_us(wait)
            now = time.ticks_us()
        if time.ticks_diff(now, self.last_probe) >= REPROBE_US:
            self.last_probe = now
            try:
                self.imu.init()
                odr_mhz = self.imu.odr_mhz()  # this part's trimmed rate, unknown until it answered
                if odr_mhz != self.odr_mhz:
                    self.set_odr(odr_mhz)
                self.imu_ok = 1
                self.last_data = now
                self.att.reset()
            except OSError:
                pass
        self._read_hall()
        self._emit(now)
        return 1
