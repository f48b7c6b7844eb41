# The firmware's BLE link (firmware/ble_link.py, with the firmware's own sample ring) on the virtual probe's
# bluetooth module as the given board's stack, against a scripted stand-in for the radio bridge whose central
# connects at a 100 ms interval, exchanges MTU 247 and reports the interval (_IRQ_CONNECTION_UPDATE).
#
#   micropython pacing_check.py PORT BOARD
#
# Produces 1000 samples/s of device time for 10 s (84 notifications/s at MTU 247: more than the link carries)
# and prints one JSON object: what the link sent and dropped, and the most notifications the stack ever held.
import json
import sys
import time

import vclock
import vradio

_host = vclock._host_time


class _Board:
    NAME = "test"


class _Battery:
    pct = 90


class _Control:
    def handle(self, data, encrypted):
        return b"", None


class Dev:
    def __init__(self):
        import ring

        self.ring = ring.SampleRing(256)
        self.board = _Board()
        self.battery = _Battery()
        self.control = _Control()
        self.status = bytearray(20)

    def status_record(self):
        return self.status


def main():
    vradio.use_board(sys.argv[2])
    vradio.connect(int(sys.argv[1]))
    import ble_link
    import bluetooth

    dev = Dev()
    link = ble_link.BleLink(dev)
    ble = bluetooth.BLE()
    t0 = _host.ticks_ms()
    while (link.conn is None or link.mtu != 247 or link.interval_ms != 100) and \
            _host.ticks_diff(_host.ticks_ms(), t0) < 5000:
        time.sleep_ms(1)
    seq = 0
    most = 0
    for _ in range(2000):  # 10 s of 5 ms steps
        for _ in range(5):
            off = dev.ring.slot()
            dev.ring.buf[off] = seq & 0xFF
            dev.ring.buf[off + 1] = (seq >> 8) & 0xFF
            seq += 1
        link.service()
        held = ble.pending() if hasattr(ble, "pending") else 0
        queued = ble._queued
        if held + queued > most:
            most = held + queued
        time.sleep_ms(5)
    print(json.dumps({"produced": seq, "sent": link.sent, "dropped": link.ring.dropped, "busy": link.busy,
                      "most_in_stack": most, "interval_ms": link.interval_ms, "mtu": link.mtu,
                      "paced": link._paced}))


main()
