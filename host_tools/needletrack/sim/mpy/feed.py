# Sensor data for the emulated chips, read from the files the host wrote for a scenario (needletrack.sim.feed).
#
#   imu.bin     little-endian int16 x 6 per sample (gyro x y z, accel x y z, raw LSB at +-500 dps / +-4 g),
#               sample k at t = k / odr_mhz * 1e9 us, odr_mhz the chip ODR it was written for (the session's
#               "imu_odr_mhz")
#   hall_X.bin  little-endian int32 x 4 per record (Bx By Bz in nT, die temperature in mdegC), every HALL_STEP_US
#
# Each source is the callable an emulator takes: source(t_us, out). It picks the record for t_us, seeking only
# when the emulator skips or repeats, and decodes it without allocating. Past the end it holds the last record.
# A source can be made to hold (a stuck sensor) or to saturate (a magnet too close) by the fault schedule.
from micropython import const

IMU_ODR_MHZ = const(833375)  # the default: the LSM6DSOX's 833 Hz setting is 6667 Hz / 8 = 833.375 Hz
HALL_STEP_US = const(500)


class _Records:
    def __init__(self, path, size):
        self.f = open(path, "rb")
        self.size = size
        self.buf = bytearray(size)
        self.next = 0  # index of the record at the file position
        self.f.seek(0, 2)
        self.count = self.f.tell() // size
        self.f.seek(0)
        self.loaded = -1

    def load(self, k):
        if k >= self.count:
            k = self.count - 1
        if k == self.loaded:
            return
        if k != self.next:
            self.f.seek(k * self.size)
        self.f.readinto(self.buf)
        self.next = k + 1
        self.loaded = k


def _i16(b, i):
    v = b[i] | b[i + 1] << 8
    return v - 0x10000 if v & 0x8000 else v


def _i32(b, i):
    v = b[i] | b[i + 1] << 8 | b[i + 2] << 16 | b[i + 3] << 24
    return v - 0x100000000 if v & 0x80000000 else v


class ImuSource:
    def __init__(self, path, odr_mhz=IMU_ODR_MHZ):
        self.rec = _Records(path, 12)
        self.odr_mhz = odr_mhz  # records per 1000 s
        self.hold = 0

    def __call__(self, t_us, out):
        if self.hold:
            return  # the emulator keeps the previous values in out
        r = self.rec
        r.load((t_us * self.odr_mhz + 500000000) // 1000000000)
        b = r.buf
        for i in range(6):
            out[i] = _i16(b, 2 * i)


class HallSource:
    def __init__(self, path):
        self.rec = _Records(path, 16)
        self.hold = 0
        self.saturate = 0

    def __call__(self, t_us, out):
        if self.hold:
            return
        if self.saturate:
            out[0] = 150000000  # 150 mT: beyond every range of the chip
            out[2] = -150000000
            return
        r = self.rec
        r.load((t_us + HALL_STEP_US // 2) // HALL_STEP_US)
        b = r.buf
        for i in range(4):
            out[i] = _i32(b, 4 * i)
