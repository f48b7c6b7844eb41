# Runs on the device (MicroPython), sent through the raw REPL by hil_tests/test_boot.py; prints one JSON line.
#
# The sensors' identities read straight from their registers on the board's own bus (its pin map), not through
# the firmware's drivers: what answers on the bus, the LSM6DSOX's WHO_AM_I, each TMAG5273's DEVICE_ID and
# MANUFACTURER_ID. A TMAG5273 in sleep mode may miss the first access, so each read is tried twice.
import json
import sys

import boards
import machine


def _read(i2c, addr, reg, n):
    for _ in range(2):
        try:
            return list(i2c.readfrom_mem(addr, reg, n))
        except OSError as e:
            err = e
    return f"OSError {err}"


def _ids():
    b = boards.select()
    i2c = machine.I2C(b.I2C_ID, scl=machine.Pin(b.I2C_SCL), sda=machine.Pin(b.I2C_SDA), freq=b.I2C_FREQ)
    return {
        "board": b.NAME,
        "machine": sys.implementation._machine,
        "unique_id": "".join(f"{x:02x}" for x in machine.unique_id()),
        "scan": i2c.scan(),
        "addresses": {"imu": b.IMU_ADDR, "hall_a": b.HALL_A_ADDR, "hall_b": b.HALL_B_ADDR},
        "imu_who_am_i": _read(i2c, b.IMU_ADDR, 0x0F, 1),
        "hall_a_id": _read(i2c, b.HALL_A_ADDR, 0x0D, 3),
        "hall_b_id": _read(i2c, b.HALL_B_ADDR, 0x0D, 3),
    }


print(json.dumps(_ids()))
