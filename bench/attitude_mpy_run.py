# MicroPython side of bench_attitude.py. Raw IMU files hold int16 little-endian samples, six per sample
# (gyro x, y, z, accel x, y, z, body frame).
#
#   micropython attitude_mpy_run.py track <raw.bin> <out.bin> <guide_mdeg> <dt_s>
#       fixed-point estimator over the file; out.bin: per sample int32 needle angle (mdeg), int32 flags
#       (1 settling, 2 moving, 4 accel used)
#   micropython attitude_mpy_run.py time <raw.bin> <n>
#       per-sample time and allocation of the fixed-point and the float filter on the same n samples; prints one
#       JSON line
import array
import gc
import json
import sys
import time

import attitude
import attitude_float
import micropython


def load(path, n=-1):
    with open(path, "rb") as f:
        data = f.read() if n < 0 else f.read(12 * n)
    buf = array.array("h", data)
    return buf, len(buf) // 6


def track(raw, out, guide_mdeg, dt):
    buf, n = load(raw)
    est = attitude.Attitude(dt_s=dt)
    needle = array.array("i", bytearray(4 * n))
    flags = array.array("i", bytearray(4 * n))
    upd = est.update
    j = 0
    for i in range(n):
        upd(buf[j], buf[j + 1], buf[j + 2], buf[j + 3], buf[j + 4], buf[j + 5])
        j += 6
        needle[i] = est.needle_angle_mdeg(guide_mdeg)
        flags[i] = est.settling + 2 * est.moving + 4 * est.accel_used
    with open(out, "wb") as f:
        f.write(needle)
        f.write(flags)


def _loop(upd, buf, n):
    j = 0
    for _ in range(n):
        upd(buf[j], buf[j + 1], buf[j + 2], buf[j + 3], buf[j + 4], buf[j + 5])
        j += 6


def _nop(gx, gy, gz, ax, ay, az):
    pass


def _timed(upd, buf, n, reps):
    best = 1 << 60
    for _ in range(reps):
        gc.collect()
        t = time.ticks_us()
        _loop(upd, buf, n)
        d = time.ticks_diff(time.ticks_us(), t)
        if d < best:
            best = d
    return best


def _alloc(upd, buf, n):
    gc.collect()
    gc.disable()
    try:
        m0 = gc.mem_alloc()
        _loop(upd, buf, n)
        return gc.mem_alloc() - m0
    finally:
        gc.enable()


def timing(raw, n):
    buf, n = load(raw, n)
    dt = 1.0 / 833
    fx = attitude.Attitude(dt_s=dt)
    fl = attitude_float.AttitudeFloat(dt_s=dt)
    # Both initialised and settled on the data first, so the timed samples take the steady-state path.
    _loop(fx.update, buf, n)
    _loop(fl.update, buf, n)
    fx_upd = fx.update
    fl_upd = fl.update
    res = {"n": n}
    res["loop_us"] = _timed(_nop, buf, n, 5) / n
    res["fixed_us"] = _timed(fx_upd, buf, n, 5) / n
    res["float_us"] = _timed(fl_upd, buf, n, 5) / n
    k = min(n, 50)  # with the collector off, the float path's garbage must fit the heap
    res["fixed_bytes"] = _alloc(fx_upd, buf, k) / k
    res["float_bytes"] = _alloc(fl_upd, buf, k) / k
    locked_ok = False
    micropython.heap_lock()
    try:
        _loop(fx_upd, buf, n)
        locked_ok = True
    except MemoryError:
        pass
    finally:
        micropython.heap_unlock()
    res["fixed_heap_lock_ok"] = locked_ok
    k = 2000
    gc.collect()
    t = time.ticks_us()
    for i in range(k):
        fx.needle_angle_mdeg(30000 + (i & 1))  # a changing guide angle also exercises the sin/cos path
    res["fixed_needle_us"] = time.ticks_diff(time.ticks_us(), t) / k
    gc.collect()
    t = time.ticks_us()
    for i in range(k):
        fl.needle_angle_deg(30.0 + (i & 1) * 1e-3)
    res["float_needle_us"] = time.ticks_diff(time.ticks_us(), t) / k
    print(json.dumps(res))


if __name__ == "__main__":
    if sys.argv[1] == "track":
        track(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    elif sys.argv[1] == "time":
        timing(sys.argv[2], int(sys.argv[3]))
