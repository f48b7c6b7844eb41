# The BLE link: the GATT server of docs/protocol.md on MicroPython's `bluetooth` module.
#
# Interrupt handlers only record what happened (a connection, an MTU, a control write); service(), called from
# the main loop between sampling batches, does the work: answers commands, sends samples. Samples leave the
# ring only once the stack has taken them; when the stack is out of buffers (OSError from gatts_notify) they
# wait in the ring, and if the ring fills its oldest are dropped and counted, so the loop never waits.
#
# The two boards' stacks differ (MicroPython builds pairing and bonding only with NimBLE):
# - ESP32-S3, NimBLE: pairing and bonding config, the bonds kept here through _IRQ_GET/SET_SECRET, which the
#   stack asks for during active(True) (so the handler is registered first); gatts_notify raises
#   OSError(ENOMEM) when its buffers are gone.
# - Pico W, BTstack: no pairing or bonding keys (config raises ValueError), the link is never encrypted, so
#   the control characteristic (write-encrypted) cannot be written; the probe streams without bonding.
#   gatts_notify never refuses: what the controller cannot take waits on the heap, without bound. This side
#   bounds it instead (see _paced).
# IRQs run between any two bytecodes on both boards: service() reads self.conn once per pass, and a gatts_notify
# for a connection that has just gone (OSError, or TypeError for a handle that is not an int) ends the pass.
import binascii
import json
import bluetooth
import machine
import time
from micropython import const

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_CONNECTION_UPDATE = const(27)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)

_F_READ = const(0x0002)
_F_WRITE = const(0x0008)
_F_NOTIFY = const(0x0010)
_F_WRITE_ENCRYPTED = const(0x1000)

SERVICE_UUID = bluetooth.UUID("301b0001-5a5e-487c-b7c0-b53a1d892a59")
MEASUREMENT_UUID = bluetooth.UUID("301b0002-5a5e-487c-b7c0-b53a1d892a59")
CONTROL_UUID = bluetooth.UUID("301b0003-5a5e-487c-b7c0-b53a1d892a59")
STATUS_UUID = bluetooth.UUID("301b0004-5a5e-487c-b7c0-b53a1d892a59")
# The same 128-bit UUID, little-endian, as it goes into the advertising data.
_SERVICE_UUID_LE = bytes(reversed(binascii.unhexlify("301b00015a5e487cb7c0b53a1d892a59")))

_MAX_BATCH = const(12)  # samples per notification at MTU 247
_NOTIFY_PER_SERVICE = const(4)  # notifications per service() call: the loop gets the CPU back quickly
# Pacing where the stack never refuses (BTstack): a controller sends at least two packets per connection event,
# so notifications are given to the stack at two per connection interval, with at most four in hand (a burst
# after a quiet spell); whatever the link cannot carry then stays in the ring, whose overflow is counted,
# instead of growing the stack's heap queue. The interval is the one the stack reported (_IRQ_CONNECTION_UPDATE);
# until then 15 ms is assumed (133 notifications/s: more than 1000 samples/s need at MTU 247). That is sound
# whenever the link carries what the loop produces: at 200 samples/s (17 notifications/s at MTU 247) any
# interval up to 115 ms; a slower central that never reports its interval lets the heap queue grow by the
# difference until it does (MicroPython reports no interval at connection).
_PACED_PER_INTERVAL = const(2)
_PACED_MAX = const(4)
_ASSUMED_INTERVAL_MS = const(15)
_ENOMEM = const(12)
_STATUS_EVERY_MS = const(2000)
_ADV_INTERVAL_US = const(100000)
BONDS_PATH = "/nt_bonds.json"


def _adv_field(kind, payload):
    return bytes((len(payload) + 1, kind)) + payload


class BleLink:
    def __init__(self, dev, ble=None, model="NT-1", firmware="0.1.0"):
        self.dev = dev
        self.ring = dev.ring.reader()
        self.ble = ble if ble is not None else bluetooth.BLE()
        uid = binascii.hexlify(machine.unique_id()).decode()
        self.serial = uid
        self.name = "NeedleTrack-" + uid[-4:].upper()
        self.conn = None
        self.mtu = 23
        self.encrypted = False
        self.command = bytearray(32)
        self.command_len = 0
        self.out = bytearray(20 * _MAX_BATCH)
        self.batt = bytearray(1)  # the Battery Level value, written in place: the loop allocates nothing
        mv = memoryview(self.out)
        self.views = [mv[:20 * n] for n in range(_MAX_BATCH + 1)]  # made once: no slicing per notification
        self.sent = 0
        self.busy = 0  # notifications the stack refused (out of buffers), since connection
        self.next_status = time.ticks_ms()
        self.interval_ms = _ASSUMED_INTERVAL_MS
        self.credit = _PACED_MAX
        self.credit_t = self.next_status
        self.secrets = self._load_secrets()
        ble = self.ble
        ble.irq(self._irq)  # first: NimBLE asks for the stored keys during active(True)
        ble.active(True)
        ble.config(gap_name=self.name, mtu=247)
        try:
            ble.config(bond=True, le_secure=True, mitm=False, io=3)  # 3: no IO
            self.pairing = True
        except ValueError:  # BTstack: MicroPython builds it without pairing and bonding
            self.pairing = False
        # Only NimBLE refuses a notification it has no buffer for; BTstack queues it on the heap, so pace.
        self._paced = not self.pairing
        nt = (SERVICE_UUID, ((MEASUREMENT_UUID, _F_NOTIFY), (CONTROL_UUID, _F_WRITE | _F_WRITE_ENCRYPTED),
                             (STATUS_UUID, _F_READ | _F_NOTIFY)))
        dis = (bluetooth.UUID(0x180A), ((bluetooth.UUID(0x2A29), _F_READ), (bluetooth.UUID(0x2A24), _F_READ),
                                        (bluetooth.UUID(0x2A25), _F_READ), (bluetooth.UUID(0x2A26), _F_READ),
                                        (bluetooth.UUID(0x2A27), _F_READ)))
        bas = (bluetooth.UUID(0x180F), ((bluetooth.UUID(0x2A19), _F_READ | _F_NOTIFY),))
        ((self.h_meas, self.h_ctrl, self.h_status), dis_h, (self.h_batt,)) = ble.gatts_register_services(
            (nt, dis, bas))
        ble.gatts_set_buffer(self.h_ctrl, len(self.command))
        for h, text in zip(dis_h, ("NeedleTrack", model, uid, firmware, dev.board.NAME)):
            ble.gatts_write(h, text)
        self._refresh_status()
        self.adv = _adv_field(0x01, b"\x06") + _adv_field(0x07, _SERVICE_UUID_LE)
        self.resp = _adv_field(0x09, self.name.encode())
        self.advertise()

    def advertise(self):
        self.ble.gap_advertise(_ADV_INTERVAL_US, self.adv, resp_data=self.resp, connectable=True)

    # -- interrupts: record, do not work -------------------------------------------------------------------

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self.conn = data[0]
            self.mtu = 23
            self.encrypted = False
            self.busy = 0
            self.interval_ms = _ASSUMED_INTERVAL_MS
            self.credit = _PACED_MAX
            self.credit_t = time.ticks_ms()
            self.ring.reset_dropped()
            # A new host wants the needle as it is now: what queued while nobody listened is not sent.
            self.ring.clear()
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.conn = None
                self.encrypted = False
            self.advertise()  # a host that comes back finds the device at once
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self.conn:
                self.mtu = data[1]
        elif event == _IRQ_CONNECTION_UPDATE:
            if data[0] == self.conn and data[4] == 0:
                ms = data[1] * 5 // 4  # units of 1.25 ms
                self.interval_ms = ms if ms > 0 else 1
        elif event == _IRQ_ENCRYPTION_UPDATE:
            conn, encrypted, _authenticated, bonded, _key_size = data
            if conn == self.conn:
                self.encrypted = bool(encrypted and bonded)
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            if handle == self.h_ctrl and conn == self.conn:
                value = self.ble.gatts_read(self.h_ctrl)
                n = len(value)
                if n > len(self.command):
                    n = len(self.command) + 1  # too long: answered BAD_LENGTH
                else:
                    self.command[:n] = value
                self.command_len = n
        elif event == _IRQ_GET_SECRET:
            sec_type, index, key = data
            return self._get_secret(sec_type, index, key)
        elif event == _IRQ_SET_SECRET:
            sec_type, key, value = data
            return self._set_secret(sec_type, key, value)
        return None

    # -- bonds: the stack asks the application to keep its keys ---------------------------------------------

    def _load_secrets(self):
        try:
            with open(BONDS_PATH) as f:
                doc = json.load(f)
            return {(int(k[0]), binascii.unhexlify(k[1])): binascii.unhexlify(v) for k, v in doc}
        except (OSError, ValueError, TypeError, KeyError):
            return {}

    def _save_secrets(self):
        doc = [[(t, binascii.hexlify(k).decode()), binascii.hexlify(v).decode()]
               for (t, k), v in self.secrets.items()]
        tmp = BONDS_PATH + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        import os
        os.rename(tmp, BONDS_PATH)

    def _get_secret(self, sec_type, index, key):
        if key is None:
            i = 0
            for (t, _k), v in self.secrets.items():
                if t == sec_type:
                    if i == index:
                        return v
                    i += 1
            return None
        return self.secrets.get((sec_type, bytes(key)))

    def _set_secret(self, sec_type, key, value):
        k = (sec_type, bytes(key))
        if value is None:
            self.secrets.pop(k, None)
        else:
            self.secrets[k] = bytes(value)
        try:
            self._save_secrets()
        except OSError:
            return False
        return True

    # -- the main loop's share --------------------------------------------------------------------------------

    def _refresh_status(self):
        self.ble.gatts_write(self.h_status, self.dev.status_record())
        pct = self.dev.battery.pct
        self.batt[0] = pct if pct <= 100 else 0
        self.ble.gatts_write(self.h_batt, self.batt)  # type: ignore[arg-type]  # any buffer; the stubs say bytes

    def service(self):
        if self.command_len:
            self._answer()
        now = time.ticks_ms()
        conn = self.conn  # once per pass: an IRQ may end the connection between any two bytecodes
        if self._paced:
            self._earn(now)
        if time.ticks_diff(now, self.next_status) >= 0:
            self.next_status = time.ticks_add(now, _STATUS_EVERY_MS)
            self._refresh_status()
            if conn is not None:
                self._notify(conn, self.h_status, self.dev.status_record(), True)
        if conn is None:
            return
        per = (self.mtu - 3) // 20
        if per > _MAX_BATCH:
            per = _MAX_BATCH
        for _ in range(_NOTIFY_PER_SERVICE):
            n = self.ring.copy_oldest(self.out, per)
            if not n:
                return
            if not self._notify(conn, self.h_meas, self.views[n]):
                return  # the stack is full (or the link gone, or paced): the samples stay queued
            self.ring.consume(n)
            self.sent += n

    def _earn(self, now):
        # Notifications the link has carried since the last pass, at the paced rate; capped.
        elapsed = time.ticks_diff(now, self.credit_t)
        if elapsed < self.interval_ms:
            return
        k = elapsed // self.interval_ms
        self.credit += k * _PACED_PER_INTERVAL
        if self.credit >= _PACED_MAX:
            self.credit = _PACED_MAX
            self.credit_t = now
        else:
            self.credit_t = time.ticks_add(self.credit_t, k * self.interval_ms)

    def _notify(self, conn, handle, data, force=False):
        # force: a command's result or the status, rare and never held back by the pacing (they still count).
        if self._paced:
            if self.credit <= 0 and not force:
                return False
            self.credit -= 1
        try:
            # The stubs omit gatts_notify's connection handle; the ports take (conn, handle, data).
            self.ble.gatts_notify(conn, handle, data)  # type: ignore[call-arg, arg-type]
            return True
        except OSError as e:
            if e.args[0] == _ENOMEM:
                self.busy += 1  # NimBLE is out of buffers
            return False  # else the connection has gone (ENOTCONN on NimBLE, EINVAL on BTstack)
        except TypeError:  # a handle that is not an int: the connection has gone
            return False

    def _answer(self):
        n = self.command_len
        self.command_len = 0
        data = bytes(self.command[:n]) if n <= len(self.command) else bytes(self.command) + b"\x00"
        result, extra = self.dev.control.handle(data, self.encrypted)
        conn = self.conn
        if conn is not None:
            self._notify(conn, self.h_status, result, True)
            if extra is not None:
                self._notify(conn, self.h_status, extra, True)
        self._refresh_status()
