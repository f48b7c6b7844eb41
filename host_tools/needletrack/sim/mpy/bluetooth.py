# The virtual probe's `bluetooth` module: MicroPython's low-level BLE API for a peripheral (GAP advertiser,
# GATT server, pairing, and the GATT client on its own connections), as MicroPython builds it for the board's
# own stack. Placed ahead of firmware/ on
# MICROPYPATH, it shadows the built-in.
#
# Two profiles, chosen by the board (vradio.use_board, or the radio bridge's hello):
#   nimble   ESP32 (XIAO ESP32S3): extmod/modbluetooth.c with MICROPY_PY_BLUETOOTH_ENABLE_PAIRING_BONDING and
#            extmod/nimble/modbluetooth_nimble.c. Pairing and bonding config keys, gap_pair/gap_passkey, the
#            encryption and secret IRQs; active(True) loads the stored keys through _IRQ_GET_SECRET (load_irk,
#            then every stored peer); gatts_notify raises OSError(ENOMEM) when the stack's mbufs are gone.
#   btstack  Pico W (rp2 port): extmod/btstack/modbluetooth_btstack.c, pairing and bonding not compiled in.
#            config(bond=/mitm=/io=/le_secure=) raises ValueError, there is no gap_pair or gap_passkey, no
#            encryption or secret IRQ, the link is never encrypted; gatts_notify never refuses: a packet the
#            controller cannot take is copied onto the heap and waits there, without bound.
#
# The stack itself runs in the radio bridge (needletrack.sim.radio, Bumble), reached through vradio. This side
# keeps what the firmware can observe synchronously: the attribute values (gatts_read/gatts_write, appended
# writes, the 20-byte default buffers), the connections and their MTU, and the stack's transmit queue. Without
# a bridge the module still works, as a radio nobody is listening to.
#
# Transmit queue: the controller takes `queue` packets; at each connection event (every connection interval
# since the connection opened) up to `per_event` of them leave for the bridge. So which notifications wait or
# fail depends on virtual time only, never on how fast the host computer runs. Values longer than
# ATT_MTU - 3 are truncated by the stack (in the bridge).
#
# GATT client (gattc_discover_services/characteristics/descriptors, gattc_read, gattc_write, gattc_exchange_mtu),
# on the peripheral's own connections: the procedure runs in the bridge's stack (Bumble's ATT client), its
# results come back as events (_IRQ_GATTC_*, MicroPython's tuples), with each stack's statuses (NimBLE 0x100 +
# the ATT error, BTstack the ATT error) and refusals (NimBLE: one characteristic discovery at a time, EBUSY;
# BTstack: one query per connection, EALREADY). Whatever the central notifies or indicates is delivered
# (_IRQ_GATTC_NOTIFY/_IRQ_GATTC_INDICATE), subscribed or not. A write without response is sent at once, not
# through the transmit queue.
#
# Events: on both boards the stack calls the IRQ handler synchronously (MICROPY_PY_BLUETOOTH_USE_SYNC_EVENTS),
# from the scheduler (rp2) or the NimBLE task holding the GIL (ESP32), i.e. between any two bytecodes of the
# firmware. Here vradio's watcher thread schedules delivery with micropython.schedule; events are also
# delivered after every sleep and machine.idle(). An event changes the stack's state (a connection, an MTU, a
# written value) when it is delivered, just before the handler runs, so gatts_read in the IRQ for a write sees
# that write. The addr/key/value items of event tuples are read-only memoryviews, as on the board: copy them to
# keep them. A handler that raises is printed and then disabled, as modbluetooth.c does.
#
# Every public method is the board's C code: vclock.enter()/leave() keep its time off the firmware's compute,
# and the handler is called through vclock.call_out so that its compute is the firmware's.
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
_IRQ_GATTC_SERVICE_RESULT = const(9)
_IRQ_GATTC_SERVICE_DONE = const(10)
_IRQ_GATTC_CHARACTERISTIC_RESULT = const(11)
_IRQ_GATTC_CHARACTERISTIC_DONE = const(12)
_IRQ_GATTC_DESCRIPTOR_RESULT = const(13)
_IRQ_GATTC_DESCRIPTOR_DONE = const(14)
_IRQ_GATTC_READ_RESULT = const(15)
_IRQ_GATTC_READ_DONE = const(16)
_IRQ_GATTC_WRITE_DONE = const(17)
_IRQ_GATTC_NOTIFY = const(18)
_IRQ_GATTC_INDICATE = const(19)
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
_EALREADY = const(114)  # MP_EALREADY

# The GATT client's procedures, as the stand-in tells them apart (_gattc_check)
_DISCOVER = const(0)
_DISCOVER_CHARS = const(1)
_READ = const(2)
_WRITE = const(3)  # with response
_WRITE_CMD = const(4)  # without response
_DONE_IRQ = {"services": _IRQ_GATTC_SERVICE_DONE, "chars": _IRQ_GATTC_CHARACTERISTIC_DONE,
             "descs": _IRQ_GATTC_DESCRIPTOR_DONE}

_NOTIFY = const(0)
_INDICATE = const(1)

_SECRET_OUR_IRK = const(10)  # modbluetooth_nimble.c load_irk(): the stack's own IRK, key b"irk"
_SECRET_PEER = const(2)  # NimBLE's BLE_STORE_OBJ_TYPE_PEER_SEC

_DEFAULT_ADDR = b"\xf4\x12\xfa\x00\x00\x01"
_GAP_NAMES = {"nimble": b"MPY ESP32", "btstack": b"MPY BTSTACK"}
# config('mtu') before any config(mtu=): NimBLE's BLE_ATT_PREFERRED_MTU; BTstack's l2cap_max_le_mtu(), the ACL
# payload (HCI_ACL_PAYLOAD_SIZE 1021 in extmod/btstack/btstack_config_common.h) less the L2CAP header.
_DEFAULT_MTU = {"nimble": 256, "btstack": 1017}
# The first handle after the stack's own services. NimBLE: GAP service 1, device name 2/3, appearance 4/5;
# GATT service 6, service changed 7/8 + CCCD 9. BTstack (mp_bluetooth_gatts_register_service_begin): GAP
# service 1, device name 2/3; GATT service 4, service changed 5/6 (read only, no CCCD).
_FIRST_HANDLE = {"nimble": 10, "btstack": 7}


def _int(x):
    # mp_obj_get_int(): ints (and bools) only; anything else is a TypeError.
    if isinstance(x, int):
        return int(x)
    raise TypeError("can't convert %s to int" % type(x).__name__)


def _buf(x):
    # mp_get_buffer_raise(x, MP_BUFFER_READ): bytes, bytearray, memoryview, str, array, UUID.
    if isinstance(x, str):
        return x.encode()
    if isinstance(x, (bytes, bytearray, memoryview, UUID)):
        return bytes(x)
    try:
        import array

        if isinstance(x, array.array):
            return bytes(x)
    except ImportError:
        pass
    raise TypeError("object with buffer protocol required")


class UUID:
    """bluetooth.UUID: 16-bit int, 2/4/16-byte buffer (little-endian), or a 128-bit string."""

    def __init__(self, value):
        vradio.enter()
        try:
            self._parse(value)
        finally:
            vradio.leave()

    def _parse(self, value):
        if isinstance(value, int):
            if value > 65535:
                raise ValueError("invalid UUID")
            self._d = bytes((value & 0xFF, (value >> 8) & 0xFF))
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


def _uuid_of(data):
    # A UUID made by the stack for an event (no bluetooth call to bracket).
    u = object.__new__(UUID)
    u._d = data
    return u


def _uuid_arg(uuid):
    # modbluetooth.c: None or a bluetooth.UUID, anything else is TypeError("UUID").
    if uuid is not None and not isinstance(uuid, UUID):
        raise TypeError("UUID")
    return uuid


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
        # A central's write keeps what fits in the buffer (appended in append mode), as both stacks' write
        # callbacks do (NimBLE characteristic_access_cb, BTstack att_write_callback).
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
        self.queue = []  # the controller's buffers: [virtual time queued, kind, value handle, value]
        self.held = []  # BTstack: what the controller could not take, on the MicroPython heap: [kind, handle, value]
        self.gattc = False  # BTstack: a GATT client query runs on this connection (its gatt_client is not ready)
        self.ends_at = 0  # gap_disconnect: virtual time of the connection event that carries LL_TERMINATE_IND
        self.asked_ms = 0  # gap_disconnect: host ticks_ms when it was asked


def _hex(b):
    return None if b is None else "".join("%02x" % x for x in b)


def _unhex(s):
    return None if s is None else bytes.fromhex(s)


def stack():
    """The stack the board runs: what vradio.use_board() chose, else the radio bridge's, else NimBLE."""
    return vradio.board_stack[0] or vradio.info.get("stack") or "nimble"


_it = [None]  # the singleton


class _BLE:
    """bluetooth.BLE(): the singleton radio. `bluetooth.BLE` is the class of the board's stack (module
    __getattr__ below), with only the methods MicroPython builds for it."""

    def __new__(cls):
        vradio.enter()
        try:
            if _it[0] is None:
                name = stack()
                it = object.__new__(_CLASSES[name])
                it._setup(name)
                _it[0] = it
            return _it[0]
        finally:
            vradio.leave()

    def __init__(self):
        pass

    def _setup(self, name):
        self._stack = name
        self._active = False
        self._handler = None
        self._db = {}
        self._chars = {}  # value handle -> flags
        self._conns = {}
        self._queued = 0
        self._events = []  # from the bridge, not yet delivered
        self._char_disc = False  # NimBLE: a characteristic discovery runs (one at a time, on any connection)
        self._in_irq = False
        self._adv = [b"", b""]
        self._advertising = False
        self._addr_mode = 0
        self._addr = (0, _DEFAULT_ADDR)
        self._mtu = _DEFAULT_MTU[name]
        self._gap_name = _GAP_NAMES.get(name, b"MPY ESP32")
        self._sec = {"bond": False, "mitm": False, "io": 3, "le_secure": False}
        self._passkeys = {}
        self._hello()
        vradio.listen(self._service)

    def _hello(self):
        # The stack's controller, as the bridge describes it (defaults without a bridge).
        info = vradio.info
        bridge = info.get("stack")
        if bridge is not None and bridge != self._stack:
            raise RuntimeError("the radio bridge emulates %s, the board runs %s" % (bridge, self._stack))
        self._qcap = info.get("queue", 12)
        self._per_event = info.get("per_event", 4)
        if "addr" in info and self._addr_mode == 0:
            self._addr = (info.get("addr_type", 0), _unhex(info["addr"]))

    # -- configuration
    def active(self, *args):
        vradio.enter()
        try:
            if args:
                if args[0] and not self._active:
                    self._hello()
                    self._active = True
                    self._db = {}
                    self._chars = {}
                    bonds = self._load_keys()
                    vradio.send_json({"op": "active", "on": True, "bonds": bonds})
                    self._send_config()
                elif not args[0] and self._active:
                    self._active = False
                    self._advertising = False
                    self._conns = {}
                    self._queued = 0
                    self._events = []
                    self._char_disc = False
                    vradio.send_json({"op": "active", "on": False})
            return self._active
        finally:
            vradio.leave()

    def _load_keys(self):
        return None

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
        vradio.enter()
        try:
            return self._config(args, kw)
        finally:
            vradio.leave()

    def _config(self, args, kw):
        if not kw:
            if len(args) != 1:
                raise TypeError("must query one param")
            name = args[0]
            if not isinstance(name, str):
                raise TypeError("can't convert %s to str" % type(name).__name__)
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
            raise ValueError("unknown config param")
        if args:
            raise TypeError("can't specify pos and kw args")
        for name, value in kw.items():
            if name == "gap_name":
                self._gap_name = _buf(value)
            elif name == "mtu":
                value = _int(value)
                self._check()
                self._set_mtu(value)
            elif name == "addr_mode":
                value = _int(value)
                self._check()
                self._set_addr_mode(value)
            elif not self._pairing_key(name, value):
                raise ValueError("unknown config param")
        if self._active:
            self._send_config()
        return None

    def _pairing_key(self, name, value):
        return False  # MICROPY_PY_BLUETOOTH_ENABLE_PAIRING_BONDING off: no such keys

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
        vradio.enter()
        try:
            if handler is not None and not callable(handler):
                raise ValueError("invalid handler")
            self._handler = handler
        finally:
            vradio.leave()

    # -- GAP
    def gap_advertise(self, interval_us=500000, adv_data=None, *, resp_data=None, connectable=True):
        vradio.enter()
        try:
            if interval_us is None:
                if self._active:
                    self._advertising = False
                    vradio.send_json({"op": "adv", "interval_us": None})
                return
            interval_us = _int(interval_us)
            data = [None if d is None else _buf(d) for d in (adv_data, resp_data)]
            self._check()
            self._check_adv(interval_us, data)
            for i in (0, 1):
                if data[i] is not None:
                    self._adv[i] = data[i]
            self._advertising = True
            vradio.send_json({"op": "adv", "interval_us": interval_us, "adv": _hex(self._adv[0]),
                              "resp": _hex(self._adv[1]), "connectable": bool(connectable)})
        finally:
            vradio.leave()

    def _check_adv(self, interval_us, data):
        pass

    def gap_disconnect(self, conn_handle):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            self._check()
            c = self._conns.get(conn_handle)
            if c is None:
                return self._disconnect_unknown()
            # The link layer sends LL_TERMINATE_IND at the next connection event and reports the disconnection
            # once the peer has acknowledged it: never before that event (_service holds it back till then).
            now = vclock.now_us()
            ends = c.next_ev
            if ends <= now:
                ends += ((now - ends) // c.ci_us + 1) * c.ci_us
            c.ends_at = ends
            c.asked_ms = vclock._host_time.ticks_ms()
            vradio.send_json({"op": "disconnect", "conn": conn_handle})
            return True
        finally:
            vradio.leave()

    # -- GATT client, on the peripheral's own connections (both ports build it: MICROPY_PY_BLUETOOTH_ENABLE_
    # GATT_CLIENT). The procedure runs in the bridge (Bumble's ATT client); its results come back as events.
    def gattc_discover_services(self, conn_handle, uuid=None):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            uuid = _uuid_arg(uuid)
            self._check()
            self._gattc_check(_DISCOVER, conn_handle, uuid)
            self._gattc_begin(_DISCOVER, conn_handle)
            vradio.send_json({"op": "gattc_services", "conn": conn_handle,
                              "uuid": None if uuid is None else _hex(uuid._d)})
        finally:
            vradio.leave()

    def gattc_discover_characteristics(self, conn_handle, start_handle, end_handle, uuid=None):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            start_handle = _int(start_handle) & 0xFFFF
            end_handle = _int(end_handle) & 0xFFFF
            uuid = _uuid_arg(uuid)
            self._check()
            self._gattc_check(_DISCOVER_CHARS, conn_handle, uuid)
            self._gattc_begin(_DISCOVER_CHARS, conn_handle)
            vradio.send_json({"op": "gattc_chars", "conn": conn_handle, "start": start_handle, "end": end_handle,
                              "uuid": None if uuid is None else _hex(uuid._d)})
        finally:
            vradio.leave()

    def gattc_discover_descriptors(self, conn_handle, start_handle, end_handle):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            start_handle = _int(start_handle) & 0xFFFF
            end_handle = _int(end_handle) & 0xFFFF
            self._check()
            self._gattc_check(_DISCOVER, conn_handle, None)
            self._gattc_begin(_DISCOVER, conn_handle)
            vradio.send_json({"op": "gattc_descs", "conn": conn_handle, "start": start_handle, "end": end_handle})
        finally:
            vradio.leave()

    def gattc_read(self, conn_handle, value_handle):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            value_handle = _int(value_handle) & 0xFFFF
            self._check()
            self._gattc_check(_READ, conn_handle, None)
            self._gattc_begin(_READ, conn_handle)
            vradio.send_json({"op": "gattc_read", "conn": conn_handle, "handle": value_handle})
        finally:
            vradio.leave()

    def gattc_write(self, conn_handle, value_handle, data, mode=0):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            value_handle = _int(value_handle) & 0xFFFF
            data = _buf(data)
            mode = _int(mode)
            self._check()
            proc = _WRITE_CMD if mode == 0 else _WRITE if mode == 1 else -1
            self._gattc_check(proc, conn_handle, None, len(data))
            self._gattc_begin(proc, conn_handle)
            vradio.send_json({"op": "gattc_write", "conn": conn_handle, "handle": value_handle, "value": _hex(data),
                              "mode": mode})
        finally:
            vradio.leave()

    def _gattc_begin(self, proc, conn_handle):
        pass

    def _gattc_end(self, conn_handle, chars):
        pass

    # -- GATT client: the MTU exchange
    def gattc_exchange_mtu(self, conn_handle):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            self._check()
            if conn_handle not in self._conns:
                self._exchange_unknown()
                return
            vradio.send_json({"op": "exchange_mtu", "conn": conn_handle})
        finally:
            vradio.leave()

    # -- GATT server
    def gatts_register_services(self, services_definition):
        vradio.enter()
        try:
            return self._register(services_definition)
        finally:
            vradio.leave()

    def _busy(self):
        return False

    def _register(self, services_definition):
        self._check()
        if self._busy():
            raise OSError(_EBUSY)
        # Handles as the bridge lays out the table: the stack's own services, then per service its declaration,
        # and per characteristic its declaration, value, a CCCD if it can notify or indicate, its descriptors.
        h = _FIRST_HANDLE[self._stack] - 1  # the last handle used
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
                cuuid, flags = ch[0], _int(ch[1])
                if not isinstance(cuuid, UUID):
                    raise ValueError("invalid characteristic UUID")
                value_handle = h + 2  # after the characteristic declaration
                h += 2
                cccd = 0
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    h += 1
                    cccd = h
                handles.append(value_handle)
                db[value_handle] = _Entry(_DEFAULT_ATTR_LEN)
                chars[value_handle] = flags
                wdescs = []
                for d in (ch[2] if len(ch) == 3 else ()):
                    if len(d) != 2:
                        raise ValueError("tuple/list has wrong length")
                    duuid, dflags = d[0], _int(d[1])
                    if not isinstance(duuid, UUID):
                        raise ValueError("invalid descriptor UUID")
                    h += 1
                    handles.append(h)
                    db[h] = _Entry(_DEFAULT_ATTR_LEN)
                    wdescs.append([_hex(duuid._d), dflags, h])
                wchars.append([_hex(cuuid._d), flags, value_handle, cccd, wdescs])
            result.append(tuple(handles))
            wire.append([_hex(suuid._d), wchars])
        self._db = db
        self._chars = chars
        vradio.send_json({"op": "services", "services": wire})
        return tuple(result)

    def gatts_read(self, value_handle):
        vradio.enter()
        try:
            e = self._db.get(_int(value_handle))
            if not self._active or e is None:
                return b""
            v = e.value()
            if e.append:
                e.n = 0
            return v
        finally:
            vradio.leave()

    def gatts_write(self, value_handle, data, send_update=False):
        vradio.enter()
        try:
            data = _buf(data)
            value_handle = _int(value_handle)
            self._check()
            e = self._db.get(value_handle)
            if e is None:
                raise OSError(errno.EINVAL)
            e.set(data)
            if send_update:
                vradio.send_json({"op": "update", "handle": value_handle, "value": _hex(data)})
            return len(data)
        finally:
            vradio.leave()

    def gatts_notify(self, conn_handle, value_handle, data=None):
        vradio.enter()
        try:
            self._enqueue(_NOTIFY, conn_handle, value_handle, data)
        finally:
            vradio.leave()

    def gatts_indicate(self, conn_handle, value_handle, data=None):
        vradio.enter()
        try:
            self._enqueue(_INDICATE, conn_handle, value_handle, data)
        finally:
            vradio.leave()

    def gatts_set_buffer(self, value_handle, len, append=False):
        vradio.enter()
        try:
            value_handle = _int(value_handle)
            size = _int(len)
            self._check()
            e = self._db.get(value_handle)
            if e is None:
                raise OSError(errno.EINVAL)
            e.data = bytearray(size)
            e.n = 0
            e.append = bool(append)
        finally:
            vradio.leave()

    def _enqueue(self, kind, conn_handle, value_handle, data):
        # modbluetooth.c: both handles through mp_obj_get_int (None: TypeError), the data through the buffer
        # protocol; None means the attribute's value in the local database.
        conn_handle = _int(conn_handle) & 0xFFFF
        value_handle = _int(value_handle) & 0xFFFF
        if data is not None:
            data = _buf(data)
        self._check()
        c = self._conns.get(conn_handle)
        if data is None:
            e = self._db.get(value_handle)
            data = e.value() if e is not None else b""
        if c is None:
            raise OSError(self._not_connected())
        if self._queued < self._qcap and not c.held:
            c.queue.append((vclock.now_us(), kind, value_handle, data))
            self._queued += 1
        else:
            self._full(c, kind, value_handle, data)

    # -- the stack's side: frames from the bridge, the transmit queue, IRQ delivery
    def _pump(self):
        events = vradio.receive()
        if events:
            self._events.extend(events)
        self._drain()

    def _service(self):
        # From a sleep, machine.idle() or the watcher's scheduled callback: read, transmit what is due, then
        # apply and deliver the events one at a time, each to the handler.
        self._pump()
        if self._in_irq:
            return
        self._in_irq = True
        try:
            while self._events and not self._held(self._events[0]):
                self._event(self._events.pop(0))
        finally:
            self._in_irq = False

    def _held(self, ev):
        # A disconnection the probe asked for is not reported before its connection event (the events after it
        # wait too, in order); a later sleep, machine.idle() or the watcher's retry a millisecond later delivers
        # it. A firmware that spins without sleeping moves no virtual time: there, one connection interval of
        # real time is the bound, as on a board.
        if ev.get("ev") != "disconnect":
            return False
        c = self._conns.get(ev["conn"])
        if c is None or vclock.now_us() >= c.ends_at:
            return False
        host = vclock._host_time
        if host.ticks_diff(host.ticks_ms(), c.asked_ms) >= c.ci_us // 1000:
            return False
        vradio.retry()
        return True

    def _call(self, event, data):
        handler = self._handler
        if handler is None:
            return None
        try:
            return vclock.call_out(handler, event, data)
        except Exception as e:
            # invoke_irq_handler_run_protected(): printed, and the handler is disabled.
            print("Unhandled exception in IRQ callback handler")
            sys.print_exception(e)
            self._handler = None
            return None

    def _reply(self, rid, **fields):
        fields["op"] = "reply"
        fields["id"] = rid
        vradio.send_json(fields)

    def _event(self, ev):
        name = ev.get("ev")
        if name == "hello":
            return
        if not self._active:
            if "id" in ev:  # a request must be answered even while the radio is off: 0x0E unlikely error
                self._reply(ev["id"], status=0x0E, value=None, ok=False)
            return
        if name == "connect":
            c = _Conn(ev["conn"], ev["addr_type"], _unhex(ev["addr"]), ev.get("interval", 24) * 1250 or
                      _DEFAULT_CI_US, vclock.now_us())
            self._conns[c.handle] = c
            self._advertising = False  # legacy advertising stops when a central connects
            self._call(_IRQ_CENTRAL_CONNECT, (c.handle, c.addr_type, memoryview(c.addr)))
        elif name == "disconnect" or name == "lost":
            if name == "lost":
                self._char_disc = False  # no bridge: no procedure will end
            for h in ([ev["conn"]] if name == "disconnect" else list(self._conns)):
                c = self._conns.pop(h, None)
                if c is not None:
                    self._queued -= len(c.queue)
                    c.held = []
                    self._passkeys.pop(h, None)
                    self._call(_IRQ_CENTRAL_DISCONNECT, self._disconnect_data(c))
        elif name == "mtu":
            c = self._conns.get(ev["conn"])
            if c is not None:
                c.mtu = ev["mtu"]
                self._call(_IRQ_MTU_EXCHANGED, (c.handle, c.mtu))
        elif name == "conn_update":
            c = self._conns.get(ev["conn"])
            if c is not None:
                c.ci_us = ev["interval"] * 1250 or c.ci_us
                self._call(_IRQ_CONNECTION_UPDATE, (c.handle, ev["interval"], ev["latency"], ev["timeout"],
                                                    ev["status"]))
        elif name == "write":
            e = self._db.get(ev["handle"])
            if e is not None:
                e.remote_write(_unhex(ev["value"]))
                self._call(_IRQ_GATTS_WRITE, (ev["conn"], ev["handle"]))
        elif name == "read":
            result = self._call(_IRQ_GATTS_READ_REQUEST, (ev["conn"], ev["handle"]))
            e = self._db.get(ev["handle"])
            self._reply(ev["id"], status=self._read_status(result if isinstance(result, int) else 0),
                        value=_hex(e.value()) if e is not None else "")
        elif name == "indicate_done":
            self._call(_IRQ_GATTS_INDICATE_DONE, (ev["conn"], ev["handle"], ev["status"]))
        elif name.startswith("gattc_"):
            self._gattc_event(name, ev)
        else:
            self._security_event(name, ev)

    def _gattc_event(self, name, ev):
        conn = ev["conn"]
        if name == "gattc_service":
            self._call(_IRQ_GATTC_SERVICE_RESULT, (conn, ev["start"], ev["end"], _uuid_of(_unhex(ev["uuid"]))))
        elif name == "gattc_char":
            self._call(_IRQ_GATTC_CHARACTERISTIC_RESULT, (conn, ev["end"], ev["handle"], ev["props"],
                                                           _uuid_of(_unhex(ev["uuid"]))))
        elif name == "gattc_desc":
            self._call(_IRQ_GATTC_DESCRIPTOR_RESULT, (conn, ev["handle"], _uuid_of(_unhex(ev["uuid"]))))
        elif name == "gattc_done":
            # The stack is ready for the next procedure before the handler hears of this one's end.
            self._gattc_end(conn, ev["what"] == "chars")
            self._call(_DONE_IRQ[ev["what"]], (conn, ev["status"]))
        elif name == "gattc_read":
            self._call(_IRQ_GATTC_READ_RESULT, (conn, ev["handle"], memoryview(_unhex(ev["value"]))))
        elif name == "gattc_read_done" or name == "gattc_write_done":
            if self._gattc_end(conn, False) is not False:
                self._call(_IRQ_GATTC_READ_DONE if name == "gattc_read_done" else _IRQ_GATTC_WRITE_DONE,
                           (conn, ev["handle"], ev["status"]))
        elif name == "gattc_notify":
            self._call(_IRQ_GATTC_INDICATE if ev["indication"] else _IRQ_GATTC_NOTIFY,
                       (conn, ev["handle"], memoryview(_unhex(ev["value"]))))

    def _security_event(self, name, ev):
        if "id" in ev:
            self._reply(ev["id"], value=None, ok=False)

    def _disconnect_data(self, c):
        return (c.handle, c.addr_type, memoryview(c.addr))

    def _read_status(self, result):
        return result  # NimBLE: characteristic_access_cb returns it as the ATT error

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
                self._refill(c, c.next_ev - c.ci_us)
            if not q and c.next_ev <= now:
                c.next_ev += ((now - c.next_ev) // c.ci_us + 1) * c.ci_us

    def _refill(self, c, t):
        pass


class _NimBLE(_BLE):
    """ESP32: MicroPython's NimBLE bindings, pairing and bonding compiled in."""

    def _pairing_key(self, name, value):
        if name in ("bond", "mitm", "le_secure"):
            self._sec[name] = bool(value)
        elif name == "io":
            self._sec[name] = _int(value)
        else:
            return False
        return True

    def _load_keys(self):
        # sync_cb() -> load_irk() while active(True) waits for the stack: the stored IRK is asked for (or a new
        # one offered for storing), then, if the store works, every stored peer's keys (ble_hs_misc_restore_irks),
        # all before active() returns. A handler registered after active(True) hears none of this.
        irk = self._call(_IRQ_GET_SECRET, (_SECRET_OUR_IRK, 0, memoryview(b"irk")))
        if irk is None or len(_buf(irk)) != 16:
            # The controller's random numbers on the board; here a function of its address, so that a run
            # repeats to the byte (the bridge does not use the IRK).
            a = self._addr[1]
            new = bytes((a[i % 6] * 31 + i * 97 + 13) & 0xFF for i in range(16))
            if not self._call(_IRQ_SET_SECRET, (_SECRET_OUR_IRK, memoryview(b"irk"), memoryview(new))):
                return []
        bonds = []
        while len(bonds) < 64:
            value = self._call(_IRQ_GET_SECRET, (_SECRET_PEER, len(bonds), None))
            if value is None:
                break
            bonds.append(_hex(_buf(value)))
        return bonds

    def _check_adv(self, interval_us, data):
        units = interval_us // 625
        if units and (units < 0x20 or units > 0x4000):
            raise OSError(errno.EINVAL)
        for d in data:
            if d is not None and len(d) > _ADV_MAX_LEN:
                raise OSError(errno.EINVAL)

    def _disconnect_unknown(self):
        return False  # ble_gap_terminate: BLE_HS_ENOTCONN

    def _set_mtu(self, value):
        if value < _ATT_DEFAULT_MTU or value > 527:  # ble_att_set_preferred_mtu: BLE_HS_EINVAL
            raise OSError(errno.EINVAL)
        self._mtu = value

    def _exchange_unknown(self):
        raise OSError(errno.ENOTCONN)  # ble_gattc_exchange_mtu: BLE_HS_ENOTCONN

    def _busy(self):
        return self._advertising or bool(self._conns)  # ble_gatts_reset: BLE_HS_EBUSY

    def _gattc_check(self, proc, conn_handle, uuid, length=0):
        # modbluetooth_nimble.c: one characteristic discovery at a time, on any connection (MP_EBUSY, before
        # NimBLE is asked); a write mode other than 0/1 is BLE_HS_EINVAL; NimBLE then refuses a handle that is
        # not connected (BLE_HS_ENOTCONN). Other procedures may overlap; here they run one after another.
        if proc == _DISCOVER_CHARS and self._char_disc:
            raise OSError(_EBUSY)
        if proc < 0:
            raise OSError(errno.EINVAL)
        if conn_handle not in self._conns:
            raise OSError(errno.ENOTCONN)

    def _gattc_begin(self, proc, conn_handle):
        if proc == _DISCOVER_CHARS:
            self._char_disc = True

    def _gattc_end(self, conn_handle, chars):
        if chars:
            self._char_disc = False
        return True

    def _not_connected(self):
        return errno.ENOTCONN

    def _full(self, c, kind, value_handle, data):
        raise OSError(errno.ENOMEM)  # ble_hs_mbuf_from_flat() found no mbuf: MP_ENOMEM

    def gap_pair(self, conn_handle):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            self._check()
            if conn_handle not in self._conns:
                raise OSError(errno.ENOTCONN)
            vradio.send_json({"op": "pair", "conn": conn_handle})
        finally:
            vradio.leave()

    def gap_passkey(self, conn_handle, action, passkey):
        vradio.enter()
        try:
            conn_handle = _int(conn_handle) & 0xFFFF
            action = _int(action) & 0xFF
            passkey = _int(passkey)
            self._check()
            if action not in (2, 3, 4):
                raise OSError(errno.EINVAL)
            if self._passkeys.pop(conn_handle, None) != action:
                raise OSError(errno.ENOENT)  # no pairing waits for this answer
            vradio.send_json({"op": "passkey", "conn": conn_handle, "action": action, "passkey": passkey})
        finally:
            vradio.leave()

    def _security_event(self, name, ev):
        if name == "enc":
            # mp_bluetooth_gatts_on_encryption_update: ints, as in every event tuple
            self._call(_IRQ_ENCRYPTION_UPDATE, (ev["conn"], 1 if ev["encrypted"] else 0,
                                                1 if ev["authenticated"] else 0, 1 if ev["bonded"] else 0,
                                                ev["key_size"]))
        elif name == "get_secret":
            key = _unhex(ev["key"])
            result = self._call(_IRQ_GET_SECRET, (ev["type"], ev["index"], None if key is None else memoryview(key)))
            self._reply(ev["id"], value=None if result is None else _hex(_buf(result)))
        elif name == "set_secret":
            value = _unhex(ev["value"])
            result = self._call(_IRQ_SET_SECRET, (ev["type"], memoryview(_unhex(ev["key"])),
                                                  None if value is None else memoryview(value)))
            self._reply(ev["id"], ok=bool(result))
        elif name == "passkey":
            self._passkeys[ev["conn"]] = ev["action"]
            self._call(_IRQ_PASSKEY_ACTION, (ev["conn"], ev["action"], ev["passkey"]))
        else:
            _BLE._security_event(self, name, ev)


class _BTstack(_BLE):
    """Pico W: MicroPython's BTstack bindings as the rp2 port builds them (no pairing or bonding)."""

    def _disconnect_unknown(self):
        return True  # mp_bluetooth_gap_disconnect() calls gap_disconnect() and returns 0 whatever the handle

    def _set_mtu(self, value):
        # l2cap_set_max_le_mtu() takes only a value below l2cap_max_mtu(); the binding then compares
        if value < _DEFAULT_MTU["btstack"]:
            self._mtu = value
        elif value != self._mtu:
            raise OSError(errno.EINVAL)

    def _exchange_unknown(self):
        pass  # mp_bluetooth_gattc_exchange_mtu() calls gatt_client_send_mtu_negotiation() and returns 0

    def _gattc_check(self, proc, conn_handle, uuid, length=0):
        # modbluetooth_btstack.c over BTstack's gatt_client: one query at a time per connection
        # (GATT_CLIENT_IN_WRONG_STATE and the binding's pending read/write: MP_EALREADY); a handle with no
        # connection is ERROR_CODE_UNKNOWN_CONNECTION_IDENTIFIER (MP_EINVAL) for gatt_client's own calls, but
        # MP_ENOTCONN where the binding looks the connection up first (gattc_read, gattc_write in modes other
        # than 0); a 32-bit UUID filter is MP_EINVAL; a write without response longer than ATT_MTU - 3 is
        # GATT_CLIENT_VALUE_TOO_LONG (MP_EINVAL).
        if uuid is not None and len(uuid._d) == 4:
            raise OSError(errno.EINVAL)
        c = self._conns.get(conn_handle)
        if c is None:
            raise OSError(errno.ENOTCONN if proc in (_READ, _WRITE, -1) else errno.EINVAL)
        if c.gattc:
            raise OSError(_EALREADY)
        if proc < 0:
            raise OSError(errno.EINVAL)
        if proc == _WRITE_CMD and length > c.mtu - 3:
            raise OSError(errno.EINVAL)

    def _gattc_begin(self, proc, conn_handle):
        if proc != _WRITE_CMD:
            self._conns[conn_handle].gattc = True

    def _gattc_end(self, conn_handle, chars):
        # A read's or write's end on a connection already gone is not reported (the binding's active
        # connection was removed at the disconnection).
        c = self._conns.get(conn_handle)
        if c is None:
            return False
        c.gattc = False
        return True

    def _not_connected(self):
        return errno.EINVAL  # att_server_notify: ERROR_CODE_UNKNOWN_CONNECTION_IDENTIFIER -> MP_EINVAL

    def _full(self, c, kind, value_handle, data):
        # att_server_notify() says BTSTACK_ACL_BUFFERS_FULL: mp_bluetooth_gatts_notify_indicate() copies the
        # value into a pending op on the MicroPython heap (m_tracked_calloc), asks to be called when the ATT
        # can send (att_server_request_to_send_notification) and returns 0. Nothing bounds that list.
        copy = bytearray(len(data))
        copy[:] = data
        c.held.append((kind, value_handle, copy))

    def _refill(self, c, t):
        # At a connection event the controller's freed buffers take the oldest pending ops, in order.
        held = c.held
        while held and self._queued < self._qcap:
            kind, handle, value = held.pop(0)
            c.queue.append((t, kind, handle, value))
            self._queued += 1

    def _read_status(self, result):
        # att_read_callback() asks the handler only for the value's length (buffer NULL) and reads a zero as
        # "denied": it then reports length 0, but the ATT Read copies the value all the same. A non-zero return
        # reports the real length. Either way the read is answered: the handler cannot refuse it.
        return 0

    def _disconnect_data(self, c):
        # HCI_EVENT_DISCONNECTION_COMPLETE: BTstack reports addr_type 0xff and a zero address.
        return (c.handle, 0xFF, memoryview(bytes(6)))

    def pending(self):
        """Not MicroPython's API: notifications waiting on the heap (for tests and the probe's report)."""
        return sum(len(c.held) for c in self._conns.values())


# Both named BLE, as MicroPython's type is ("'BLE' object has no attribute 'gap_pair'" on the Pico W).
_CLASSES = {"nimble": type("BLE", (_NimBLE,), {}), "btstack": type("BLE", (_BTstack,), {})}


def __getattr__(name):
    # bluetooth.BLE: the class of the stack the board runs (known once vradio.use_board or the bridge says).
    if name == "BLE":
        return _CLASSES[_it[0]._stack if _it[0] is not None else stack()]
    raise AttributeError(name)
