# A small GATT peripheral for the radio tests, written against MicroPython's bluetooth API the way a board's
# firmware is: runs on the unix port with the virtual probe's bluetooth/time/vradio modules.
#
#   micropython radio_peripheral.py PORT DURATION_S PACE [random]     (DURATION_S 0: until killed)
#
# It serves the NeedleTrack service (measurement notify, control write-encrypted, status read/notify) plus an
# "echo" characteristic: a write of v is answered by a notification of len(v) followed by v repeated to 300
# bytes (longer than any MTU allows); b"D" makes the peripheral disconnect, b"I" indicate b"ind" on status,
# b"U" gatts_write b"upd" to status with send_update. "random" advertises from a static random address.
# Measurement samples (protocol v1 layout, seq counting up) are produced at 200 Hz of virtual time into a ring
# and sent in batches of what fits the MTU, keeping what the stack refuses (ENOMEM) for the next tick, as the
# firmware's link does.
# Bonds live in a dict through _IRQ_GET_SECRET/_IRQ_SET_SECRET. Events are printed as "# ..." lines.
import struct
import sys
import time

import bluetooth
import vradio
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_READ_REQUEST = const(4)
_IRQ_GATTS_INDICATE_DONE = const(20)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)

_FLAG_WRITE_ENCRYPTED = const(0x1000)
_ENOMEM = const(12)

SERVICE = bluetooth.UUID("301b0001-5a5e-487c-b7c0-b53a1d892a59")
MEASUREMENT = (bluetooth.UUID("301b0002-5a5e-487c-b7c0-b53a1d892a59"), bluetooth.FLAG_NOTIFY)
CONTROL = (bluetooth.UUID("301b0003-5a5e-487c-b7c0-b53a1d892a59"), bluetooth.FLAG_WRITE | _FLAG_WRITE_ENCRYPTED)
STATUS = (bluetooth.UUID("301b0004-5a5e-487c-b7c0-b53a1d892a59"), bluetooth.FLAG_READ | bluetooth.FLAG_NOTIFY)
ECHO = (bluetooth.UUID("301b00f0-5a5e-487c-b7c0-b53a1d892a59"), bluetooth.FLAG_WRITE | bluetooth.FLAG_NOTIFY)

RATE_US = 5000  # 200 Hz
TICK_US = 10000
RING = 256


def adv_payload(name, uuid):
    flags = b"\x02\x01\x06"
    u = bytes(uuid)
    return flags + bytes((len(u) + 1, 0x07)) + u, bytes((len(name) + 1, 0x09)) + name


class Peripheral:
    def __init__(self, ble, random_address=False):
        self.ble = ble
        self.conn = None
        self.mtu = 23
        self.ring = []
        self.seq = 0
        self.dropped = 0
        self.enomem = 0
        self.sent = 0
        self.secrets = {}
        self.pending_echo = None
        ble.irq(self.irq)  # before active(True): NimBLE asks for the stored keys then
        ble.active(True)
        ble.config(gap_name="NeedleTrack-TEST")
        try:
            ble.config(bond=True, le_secure=True, io=3)
        except ValueError:  # BTstack on the Pico W: no pairing or bonding in MicroPython's build
            print("# no pairing")
        if random_address:
            ble.config(addr_mode=1)
        addr_type, addr = ble.config("mac")
        print("# mac", addr_type, bytes(addr).hex())
        ((self.h_meas, self.h_ctrl, self.h_status, self.h_echo),) = ble.gatts_register_services(
            ((SERVICE, (MEASUREMENT, CONTROL, STATUS, ECHO)),))
        ble.gatts_set_buffer(self.h_echo, 64)
        self.adv, self.resp = adv_payload(b"NeedleTrack-TEST", SERVICE)
        self.advertise()

    def advertise(self):
        self.ble.gap_advertise(100000, self.adv, resp_data=self.resp)

    def irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self.conn, addr_type, addr = data
            self.mtu = 23
            print("# connect", self.conn, addr_type, bytes(addr).hex())
        elif event == _IRQ_CENTRAL_DISCONNECT:
            print("# disconnect", data[0])
            self.conn = None
            self.advertise()
        elif event == _IRQ_GATTS_INDICATE_DONE:
            print("# indicated", data[1], data[2])
        elif event == _IRQ_MTU_EXCHANGED:
            self.mtu = data[1]
            print("# mtu", data[1])
        elif event == _IRQ_ENCRYPTION_UPDATE:
            print("# enc", *data)
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data
            value = self.ble.gatts_read(handle)
            if handle == self.h_ctrl:
                print("# control", value.hex())
                result = struct.pack("<BBBBi", 2, value[0], value[1] if len(value) > 1 else 0, 0, 0)
                self.ble.gatts_notify(conn, self.h_status, result)
            elif handle == self.h_echo:
                if value == b"D":
                    self.ble.gap_disconnect(conn)
                elif value == b"I":
                    self.ble.gatts_write(self.h_status, b"ind")
                    self.ble.gatts_indicate(conn, self.h_status)
                elif value == b"U":
                    self.ble.gatts_write(self.h_status, b"upd", True)
                else:
                    self.pending_echo = bytes((len(value),)) + value * (300 // max(1, len(value)) + 1)
        elif event == _IRQ_GATTS_READ_REQUEST:
            if data[1] == self.h_status:
                self.ble.gatts_write(self.h_status, struct.pack("<BBBBHHHHHHI", 1, 1, 1, 255, 0, 0,
                                                                min(self.dropped, 65535), 200, 0, 0, 0))
            return 0
        elif event == _IRQ_SET_SECRET:
            sec_type, key, value = data
            key = (sec_type, bytes(key))
            if value is None:
                return self.secrets.pop(key, None) is not None
            self.secrets[key] = bytes(value)
            if sec_type == 2:
                print("# bonded", bytes(key[1]).hex())
            return True
        elif event == _IRQ_GET_SECRET:
            sec_type, index, key = data
            if key is None:
                found = [v for k, v in self.secrets.items() if k[0] == sec_type]
                return found[index] if index < len(found) else None
            return self.secrets.get((sec_type, bytes(key)), None)

    def produce(self, t_us):
        s = struct.pack("<HIhhhhhhH", self.seq & 0xFFFF, t_us & 0x3FFFFFFF, 0, 3000, 0, 0, 0, 0, 1 << 12)
        self.seq += 1
        if len(self.ring) >= RING:
            self.ring.pop(0)
            self.dropped += 1
        self.ring.append(s)

    def flush(self):
        if self.conn is None:
            return
        if self.pending_echo is not None:
            try:
                self.ble.gatts_notify(self.conn, self.h_echo, self.pending_echo)
                self.pending_echo = None
            except OSError:
                pass
        per = max(1, (self.mtu - 3) // 20)
        while self.ring and self.conn is not None:
            n = min(len(self.ring), per)
            try:
                self.ble.gatts_notify(self.conn, self.h_meas, b"".join(self.ring[:n]))
            except OSError as e:
                if e.args[0] == _ENOMEM:
                    self.enomem += 1
                return
            del self.ring[:n]
            self.sent += n


def main():
    port, duration_s, pace = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    vradio.connect(port, pace=pace)
    p = Peripheral(bluetooth.BLE(), random_address="random" in sys.argv[4:])
    print("# ready", p.h_meas, p.h_ctrl, p.h_status, p.h_echo)
    t0 = time.ticks_us()
    t = 0
    next_sample = 0
    end = int(duration_s * 1000000)
    while t < end or not end:
        time.sleep_us(TICK_US)
        t = time.ticks_diff(time.ticks_us(), t0)
        while next_sample <= t:
            p.produce(time.ticks_add(t0, next_sample))
            next_sample += RATE_US
        p.flush()
    print("# end", p.seq, p.sent, p.dropped, p.enomem)


main()
