# The virtual probe's `bluetooth` module: MicroPython's low-level BLE API for a peripheral (GAP advertiser,
# GATT server, pairing), with the semantics of the NimBLE bindings on ESP32 (MicroPython extmod/modbluetooth.c
# and extmod/nimble/modbluetooth_nimble.c). Placed ahead of firmware/ on MICROPYPATH, it shadows the built-in.
#
# The stack itself runs in the radio bridge (needletrack.sim.radio, Bumble), reached through vradio. This side
# keeps what the firmware can observe synchronously: the attribute values (gatts_read/gatts_write, appended
# writes, the 20-byte default buffers), the connections and their MTU, and the stack's transmit queue. Without
# a bridge the module still works, as a radio nobody is listening to.
#
# Transmit queue: gatts_notify/gatts_indicate put the value in a bounded queue (NimBLE's mbuf pool: 12 blocks by
# default) and raise OSError(ENOMEM) when it is full, as NimBLE does under back-pressure. The queue drains on the
# virtual clock: at each connection event (every connection interval since the connection opened) up to
# `per_event` packets leave for the bridge. So which notifications fail depends on virtual time only, never on
# how fast the host computer runs. Values longer than ATT_MTU - 3 are truncated by the stack (in the bridge).
#
# Events reach the handler given to irq() whenever the firmware sleeps (time.sleep*, through vclock.hooks),
# one at a time, on the firmware's own thread. The stack's state (connections, MTU, received values) is updated
# as soon as an event is read, which may be inside any bluetooth call, before the firmware's handler hears of it.
# The addr/key/value items of event tuples are read-only memoryviews, as on the board: copy them to keep them.
import errno
import sys
from micropython import const

import vclock
import vradio

FLAG_READ = const(0x0002)
FLAG_WRITE_NO_RESPONSE = const(0x0004)
FLAG_WRITE = const(0x0008)
FLAG_NOTIFY = const(0x0010)
FLAG_INDICATE = const(0x0020)

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_READ_REQUEST = const(4)
_IRQ_GATTS_INDICATE_DONE = const(20)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_CONNECTION_UPDATE = const(27)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_IRQ_PASSKEY_ACTION = const(31)

_DEFAULT_ATTR_LEN = const(20)
_ADV_MAX_LEN = const(31)
_ATT_DEFAULT_MTU = const(23)
_DEFAULT_CI_US = const(30000)

_EBUSY = const(16)  # MicroPython's MP_EBUSY; the errno module does not name it

_NOTIFY = const(0)
_INDICATE = const(1)

_DEFAULT_ADDR = b"\xf4\x12\xfa\x00\x00\x01"
_GAP_NAMES = {"nimble": b"MPY ESP32", "btstack": b"MPY BTSTACK"}


class UUID:
    """bluetooth.UUID: 16-bit int, 2/4/16-byte buffer (little-endian), or a 128-bit string."""

    def __init__(self, value):
        if isinstance(value, int):
            if value < 0 or value > 65535:
                raise ValueError("invalid UUID")
            self._d = bytes((value & 0xFF, value >> 8))
            return
        data = _buf(value)
        if len(data) in (2, 4, 16):
            self._d = data
            return
        digits = []
        for c in data:
            if c == 0x2D:  # '-'
                continue
            if 0x30 <= c <= 0x39:
                digits.append(c - 0x30)
            elif 0x41 <= c <= 0x46 or 0x61 <= c <= 0x66:
                digits.append((c | 0x20) - 0x61 + 10)
            else:
                raise ValueError("invalid char in UUID")
        if len(digits) > 32:
            raise ValueError("UUID too long")
        if len(digits) < 32:
            raise ValueError("UUID too short")
        self._d = bytes((digits[30 - 2 * i] << 4) | digits[31 - 2 * i] for i in range(16))

    def __iter__(self):
        # bytes(uuid) gives the little-endian bytes, as the board's buffer protocol does.
        return iter(self._d)

    def __eq__(self, other):
        return isinstance(other, UUID) and self._d == other._d

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self._d)

    def __repr__(self):
        d = self._d
        if len(d) <= 4:
            return "UUID(0x%s)" % "".join("%02x" % b for b in reversed(d))
        h = "".join("%02x" % b for b in reversed(d))
        return "UUID('%s-%s-%s-%s-%s')" % (h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])


class _Entry:
    # One attribute value in the local database: a buffer of `alloc` bytes holding `n` of them.
    def __init__(self, alloc):
        self.data = bytearray(alloc)
        self.n = 0
        self.append = False

    def value(self):
        return bytes(self.data[:self.n])

    def set(self, value):
        if len(value) > len(self.data):
            self.data = bytearray(len(value))
        self.data[:len(value)] = value
        self.n = len(value)

    def remote_write(self, value):
        # A central's write keeps what fits in the buffer (appended in append mode), as NimBLE's access callback.
        start = self.n if self.append else 0
        n = min(len(self.data), start + len(value))
        self.data[start:n] = value[:n - start]
        self.n = n


class _Conn:
    def __init__(self, handle, addr_type, addr, ci_us, now):
        self.handle = handle
        self.addr_type = addr_type
        self.addr = addr
        self.mtu = _ATT_DEFAULT_MTU
        self.ci_us = ci_us
        self.next_ev = now + ci_us  # virtual time of the next connection event
        self.queue = []  # [virtual time queued, kind, value handle, value]


def _buf(x):
    # Anything with the buffer protocol, as the board's bindings accept (str included).
    return x.encode() if isinstance(x, str) else bytes(x)


def _hex(b):
    return None if b is None else "".join("%02x" % x for x in b)


def _unhex(s):
    return None if s is None else bytes.fromhex(s)


class BLE:
    """bluetooth.BLE(): the singleton radio."""

    _it = None

    def __new__(cls):
        if BLE._it is None:
            BLE._it = object.__new__(cls)
            BLE._it._setup()
        return BLE._it

    def __init__(self):
        pass

    def _setup(self):
        self._active = False
        self._handler = None
        self._db = {}
        self._chars = {}  # value handle -> flags
        self._conns = {}
        self._queued = 0
        self._irqs = []  # [event, data, request id or None, request kind]
        self._in_irq = False
        self._adv = [b"", b""]
        self._advertising = False
        self._addr_mode = 0
        self._addr = (0, _DEFAULT_ADDR)
        self._mtu = 256
        self._gap_name = b"MPY ESP32"
        self._sec = {"bond": False, "mitm": False, "io": 3, "le_secure": False}
        self._passkeys = {}
        vradio.listen(self._service)
        self._hello()
        self._gap_name = _GAP_NAMES.get(self._stack, self._gap_name)

    def _hello(self):
        # The emulated stack and its controller, as the bridge describes them (defaults without a bridge).
        info = vradio.info
        self._stack = info.get("stack", "nimble")
        self._qcap = info.get("queue", 12)
        self._per_event = info.get("per_event", 4)
        if "addr" in info and self._addr_mode == 0:
            self._addr = (info.get("addr_type", 0), _unhex(info["addr"]))

    # -- configuration
    def active(self, *args):
        if args:
            on = bool(args[0])
            if on and not self._active:
                self._hello()
                self._active = True
                self._db = {}
                self._chars = {}
                vradio.send_json({"op": "active", "on": True})
                self._send_config()
            elif not on and self._active:
                self._active = False
                self._advertising = False
                self._conns = {}
                self._queued = 0
                self._irqs = []
                vradio.send_json({"op": "active", "on": False})
        return self._active

    def _check(self):
        if not self._active:
            raise OSError(errno.ENODEV)
        self._pump()

    def _send_config(self):
        cfg = {"op": "config", "gap_name": _hex(self._gap_name), "mtu": self._mtu,
               "addr": [self._addr[0], _hex(self._addr[1])]}
        cfg.update(self._sec)
        vradio.send_json(cfg)

    def config(self, *args, **kw):
        if not kw:
            if len(args) != 1:
                raise TypeError("must query one param")
            name = args[0]
            if name == "gap_name":
                return self._gap_name
            if name == "mac":
                self._check()
                if self._addr_mode == 2:
                    raise OSError(errno.EINVAL)  # NimBLE cannot tell the current RPA
                return (self._addr[0], self._addr[1])
            if name == "mtu":
                self._check()
                return self._mtu
            if name == "rxbuf" and self._stack != "nimble":
                return 128
            raise ValueError("unknown config param")
        if args:
            raise TypeError("can't specify pos and kw args")
        for name, value in kw.items():
            if name == "gap_name":
                self._gap_name = _buf(value)
            elif name == "mtu":
                self._check()
                if value < _ATT_DEFAULT_MTU or value > 527:
                    raise OSError(errno.EINVAL)
                self._mtu = value
            elif name == "addr_mode":
                self._check()
                self._set_addr_mode(value)
            elif name in ("bond", "mitm", "le_secure"):
                self._sec[name] = bool(value)
            elif name == "io":
                self._sec[name] = int(value)
            elif name == "rxbuf" and self._stack != "nimble":
                if value < 16 or value > 0xFFFF:
                    raise ValueError
            else:
                raise ValueError("unknown config param")
        if self._active:
            self._send_config()

    def _set_addr_mode(self, mode):
        import os
        if mode == 0:
            self._addr = (0, _unhex(vradio.info.get("addr", _hex(_DEFAULT_ADDR))))
        else:
            a = bytearray(os.urandom(6))
            a[0] = (a[0] & 0x3F) | (0x00 if mode == 3 else 0xC0)  # NRPA: top bits 00; static random: 11
            self._addr = (1, bytes(a))
        self._addr_mode = mode

    def irq(self, handler):
        if handler is not None and not callable(handler):
            raise ValueError("invalid handler")
        self._handler = handler

    # -- GAP
    def gap_advertise(self, interval_us=500000, adv_data=None, *, resp_data=None, connectable=True):
        self._check()
        if interval_us is None:
            self._advertising = False
            vradio.send_json({"op": "adv", "interval_us": None})
            return
        units = interval_us // 625
        if units and (units < 0x20 or units > 0x4000):
            raise OSError(errno.EINVAL)
        for i, data in enumerate((adv_data, resp_data)):
            if data is not None:
                data = _buf(data)
                if len(data) > _ADV_MAX_LEN:
                    raise OSError(errno.EINVAL)
                self._adv[i] = data
        self._advertising = True
        vradio.send_json({"op": "adv", "interval_us": interval_us, "adv": _hex(self._adv[0]),
                          "resp": _hex(self._adv[1]), "connectable": bool(connectable)})

    def gap_disconnect(self, conn_handle):
        self._check()
        if conn_handle not in self._conns:
            return False
        vradio.send_json({"op": "disconnect", "conn": conn_handle})
        return True

    def gap_pair(self, conn_handle):
        self._check()
        if conn_handle not in self._conns:
            raise OSError(errno.ENOTCONN)
        vradio.send_json({"op": "pair", "conn": conn_handle})

    def gap_passkey(self, conn_handle, action, passkey):
        self._check()
        if action not in (2, 3, 4):
            raise OSError(errno.EINVAL)
        if self._passkeys.pop(conn_handle, None) != action:
            raise OSError(errno.ENOENT)  # no pairing waits for this answer
        vradio.send_json({"op": "passkey", "conn": conn_handle, "action": action, "passkey": passkey})

    # -- GATT server
    def gatts_register_services(self, services_definition):
        self._check()
        if self._advertising or self._conns:
            raise OSError(_EBUSY)
        # Handles as the bridge lays out the table: GAP service 1-5 (name, appearance), GATT service 6-9
        # (service changed + CCCD), then per service its declaration, and per characteristic its declaration,
        # value, a CCCD if it can notify or indicate, then its descriptors.
        h = 10  # the next free handle
        result = []
        wire = []
        db = {}
        chars = {}
        for service in services_definition:
            if len(service) != 2:
                raise ValueError("tuple/list has wrong length")
            suuid, characteristics = service
            if not isinstance(suuid, UUID):
                raise ValueError("invalid service UUID")
            handles = []
            wchars = []
            h += 1  # the service declaration
            for ch in characteristics:
                if len(ch) < 2 or len(ch) > 3:
                    raise ValueError("invalid characteristic tuple")
                cuuid, flags = ch[0], ch[1]
                if not isinstance(cuuid, UUID):
                    raise ValueError("invalid characteristic UUID")
                value_handle = h + 1  # after the characteristic declaration
                h += 2
                cccd = 0
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    cccd = h
                    h += 1
                handles.append(value_handle)
                db[value_handle] = _Entry(_DEFAULT_ATTR_LEN)
                chars[value_handle] = flags
                wdescs = []
                for d in (ch[2] if len(ch) == 3 else ()):
                    if len(d) != 2:
                        raise ValueError("tuple/list has wrong length")
                    duuid, dflags = d
                    if not isinstance(duuid, UUID):
                        raise ValueError("invalid descriptor UUID")
                    handles.append(h)
                    db[h] = _Entry(_DEFAULT_ATTR_LEN)
                    wdescs.append([_hex(duuid._d), dflags, h])
                    h += 1
                wchars.append([_hex(cuuid._d), flags, value_handle, cccd, wdescs])
            result.append(tuple(handles))
            wire.append([_hex(suuid._d), wchars])
        self._db = db
        self._chars = chars
        vradio.send_json({"op": "services", "services": wire})
        return tuple(result)

    def gatts_read(self, value_handle):
        e = self._db.get(value_handle)
        if not self._active or e is None:
            return b""
        v = e.value()
        if e.append:
            e.n = 0
        return v

    def gatts_write(self, value_handle, data, send_update=False):
        self._check()
        e = self._db.get(value_handle)
        if e is None:
            raise OSError(errno.EINVAL)
        data = _buf(data)
        e.set(data)
        if send_update:
            vradio.send_json({"op": "update", "handle": value_handle, "value": _hex(data)})
        return len(data)

    def gatts_notify(self, conn_handle, value_handle, data=None):
        self._enqueue(_NOTIFY, conn_handle, value_handle, data)

    def gatts_indicate(self, conn_handle, value_handle, data=None):
        self._enqueue(_INDICATE, conn_handle, value_handle, data)

    def gatts_set_buffer(self, value_handle, len, append=False):
        self._check()
        e = self._db.get(value_handle)
        if e is None:
            raise OSError(errno.EINVAL)
        e.data = bytearray(len)
        e.n = 0
        e.append = bool(append)

    def _enqueue(self, kind, conn_handle, value_handle, data):
        self._check()
        c = self._conns.get(conn_handle)
        if c is None:
            raise OSError(errno.ENOTCONN)
        if data is None:
            e = self._db.get(value_handle)
            if e is None:
                raise OSError(errno.ENOENT)
            data = e.value()
        if self._queued >= self._qcap:
            raise OSError(errno.ENOMEM)
        c.queue.append((vclock.now_us(), kind, value_handle, _buf(data)))
        self._queued += 1

    # -- the stack's side: frames from the bridge, the transmit queue, IRQ delivery
    def _pump(self):
        for ev in vradio.receive():
            self._event(ev)
        self._drain()

    def _service(self):
        # After each sleep: read, transmit what is due, then hand queued events to the firmware.
        self._pump()
        if self._in_irq:
            return
        self._in_irq = True
        try:
            while self._irqs:
                event, data, rid, kind = self._irqs.pop(0)
                self._deliver(event, data, rid, kind)
        finally:
            self._in_irq = False

    def _deliver(self, event, data, rid, kind):
        result = None
        if self._handler is not None:
            try:
                result = self._handler(event, data)
            except Exception as e:  # the board prints the exception and carries on
                sys.print_exception(e)
        if rid is None:
            return
        if kind == "read":
            status = result if isinstance(result, int) else 0
            e = self._db.get(data[1])
            vradio.send_json({"op": "reply", "id": rid, "status": status,
                              "value": _hex(e.value()) if e is not None else ""})
        elif kind == "get_secret":
            vradio.send_json({"op": "reply", "id": rid, "value": None if result is None else _hex(_buf(result))})
        elif kind == "set_secret":
            vradio.send_json({"op": "reply", "id": rid, "ok": bool(result)})

    def _irq(self, event, data, rid=None, kind=None):
        self._irqs.append((event, data, rid, kind))

    def _event(self, ev):
        name = ev.get("ev")
        if name == "hello":
            return
        if not self._active:
            if "id" in ev:  # a request must be answered even while the radio is off: 0x0E unlikely error
                vradio.send_json({"op": "reply", "id": ev["id"], "status": 0x0E, "value": None, "ok": False})
            return
        if name == "connect":
            c = _Conn(ev["conn"], ev["addr_type"], _unhex(ev["addr"]), ev.get("interval", 24) * 1250 or
                      _DEFAULT_CI_US, vclock.now_us())
            self._conns[c.handle] = c
            self._advertising = False  # legacy advertising stops when a central connects
            self._irq(_IRQ_CENTRAL_CONNECT, (c.handle, c.addr_type, memoryview(c.addr)))
        elif name == "disconnect" or name == "lost":
            for h in ([ev["conn"]] if name == "disconnect" else list(self._conns)):
                c = self._conns.pop(h, None)
                if c is not None:
                    self._queued -= len(c.queue)
                    self._passkeys.pop(h, None)
                    self._irq(_IRQ_CENTRAL_DISCONNECT, (c.handle, c.addr_type, memoryview(c.addr)))
        elif name == "mtu":
            c = self._conns.get(ev["conn"])
            if c is not None:
                c.mtu = ev["mtu"]
                self._irq(_IRQ_MTU_EXCHANGED, (c.handle, c.mtu))
        elif name == "conn_update":
            c = self._conns.get(ev["conn"])
            if c is not None:
                c.ci_us = ev["interval"] * 1250 or c.ci_us
                self._irq(_IRQ_CONNECTION_UPDATE, (c.handle, ev["interval"], ev["latency"], ev["timeout"],
                                                   ev["status"]))
        elif name == "enc":
            self._irq(_IRQ_ENCRYPTION_UPDATE, (ev["conn"], bool(ev["encrypted"]), bool(ev["authenticated"]),
                                               bool(ev["bonded"]), ev["key_size"]))
        elif name == "write":
            e = self._db.get(ev["handle"])
            if e is not None:
                e.remote_write(_unhex(ev["value"]))
                self._irq(_IRQ_GATTS_WRITE, (ev["conn"], ev["handle"]))
        elif name == "read":
            self._irq(_IRQ_GATTS_READ_REQUEST, (ev["conn"], ev["handle"]), ev["id"], "read")
        elif name == "get_secret":
            key = _unhex(ev["key"])
            self._irq(_IRQ_GET_SECRET, (ev["type"], ev["index"], None if key is None else memoryview(key)),
                      ev["id"], "get_secret")
        elif name == "set_secret":
            value = _unhex(ev["value"])
            self._irq(_IRQ_SET_SECRET, (ev["type"], memoryview(_unhex(ev["key"])),
                                        None if value is None else memoryview(value)), ev["id"], "set_secret")
        elif name == "passkey":
            self._passkeys[ev["conn"]] = ev["action"]
            self._irq(_IRQ_PASSKEY_ACTION, (ev["conn"], ev["action"], ev["passkey"]))
        elif name == "indicate_done":
            self._irq(_IRQ_GATTS_INDICATE_DONE, (ev["conn"], ev["handle"], ev["status"]))

    def _drain(self):
        # Connection events up to now, each taking up to per_event packets queued before it.
        now = vclock.now_us()
        for c in self._conns.values():
            q = c.queue
            while q and c.next_ev <= now:
                if q[0][0] > c.next_ev:
                    c.next_ev += (q[0][0] - c.next_ev + c.ci_us - 1) // c.ci_us * c.ci_us
                    continue
                sent = 0
                while q and sent < self._per_event and q[0][0] <= c.next_ev:
                    _, kind, handle, value = q.pop(0)
                    vradio.send(vradio.KIND_INDICATE if kind == _INDICATE else vradio.KIND_NOTIFY,
                                bytes((c.handle & 0xFF, c.handle >> 8, handle & 0xFF, handle >> 8)) + value)
                    self._queued -= 1
                    sent += 1
                c.next_ev += c.ci_us
            if not q and c.next_ev <= now:
                c.next_ev += ((now - c.next_ev) // c.ci_us + 1) * c.ci_us
