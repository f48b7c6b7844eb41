# The virtual probe's radio: a socket to the radio bridge (needletrack.sim.radio, CPython), which runs a real
# BLE stack (Bumble) on a virtual link and exposes it to hosts as an HCI controller.
#
#   import vradio
#   vradio.connect(port)            # once, at boot, before the firmware imports bluetooth
#   vradio.connect(port, pace=1)    # also hold virtual time to at most pace x real time
#
# Frames on the socket, both ways: u16 little-endian length of what follows, u8 kind, payload.
#   KIND_JSON     a JSON object: {"op": ...} from here, {"ev": ...} from the bridge
#   KIND_NOTIFY   u16 conn_handle, u16 value_handle, value: one notification leaving the stack's queue
#   KIND_INDICATE same layout, an indication
# The bridge speaks first with {"ev": "hello", ...}: the controller's address and the stack's model parameters.
#
# The GATT client on the probe's own connections (bluetooth.gattc_*; handles are ints, UUIDs and values hex,
# UUIDs in their little-endian wire bytes). Ops, each answered by events as the procedure runs in the bridge:
#   {"op": "gattc_services", "conn", "uuid": hex|null}        -> gattc_service*, gattc_done "services"
#   {"op": "gattc_chars", "conn", "start", "end", "uuid"}      -> gattc_char*, gattc_done "chars"
#   {"op": "gattc_descs", "conn", "start", "end"}              -> gattc_desc*, gattc_done "descs"
#   {"op": "gattc_read", "conn", "handle"}                     -> gattc_read (on success), gattc_read_done
#   {"op": "gattc_write", "conn", "handle", "value", "mode"}   -> mode 1: gattc_write_done; mode 0: nothing
# Events:
#   {"ev": "gattc_service", "conn", "start", "end", "uuid"}
#   {"ev": "gattc_char", "conn", "end", "handle", "props", "uuid"}   (end: the characteristic's last handle)
#   {"ev": "gattc_desc", "conn", "handle", "uuid"}
#   {"ev": "gattc_done", "conn", "what": "services"|"chars"|"descs", "status"}
#   {"ev": "gattc_read", "conn", "handle", "value"}
#   {"ev": "gattc_read_done" | "gattc_write_done", "conn", "handle", "status"}
#   {"ev": "gattc_notify", "conn", "handle", "value", "indication": bool}   (whatever the central sends; the
#                                                                            bridge confirms an indication)
# A status is the emulated stack's: 0, else NimBLE 0x100 + the ATT error / 7 link gone / 13 timeout, BTstack
# the ATT error / 0x1F link gone / 0x7F timeout.
#
# When events are delivered: as on a board, between any two bytecodes of the firmware. A watcher thread (the
# unix port's _thread, no GIL) only polls the socket and, when something has arrived, asks MicroPython's
# scheduler once to run _kick on the firmware's own thread (micropython.schedule, allocation-free; the
# scheduler runs it at the next bytecode boundary). All reading, parsing and handler calls happen there. A kick
# that lands inside an emulated module (vclock's depth > 0: the board's C code, where no IRQ can run) or while
# the firmware holds the heap locked (micropython.heap_lock: nothing could be parsed) is deferred: to the end
# of the bluetooth call it interrupted, to the next sleep or machine.idle() (vclock.hooks), or to the next
# kick, which the watcher retries after a millisecond. Without a bridge there is no thread and no event.
import json
import micropython
import select
import socket
import struct
import sys
import _thread

import vclock

KIND_JSON = 0x4A
KIND_NOTIFY = 0x4E
KIND_INDICATE = 0x49

_host = vclock._host_time

info = {}  # the bridge's hello
_link = [None, None]  # [socket, poll object]
_rx = [b""]  # bytes received and not yet parsed into frames
_inbox = []  # JSON objects parsed and not yet taken
_listeners = []  # functions called after every sleep while connected
_pace = [0, 0, 0]  # [virtual us per real ms (0: no pacing), virtual us at start, host ms at start]
# [watcher state: 0 idle, 1 kick scheduled, 2 kick deferred (retry in 1 ms); a deferred kick waits; generation
# of the link the watcher serves]
_sig = [0, 0, 0]

# The stack of the board, for a probe without a bridge (and to check a bridge against): use_board() sets it.
BOARD_STACKS = {"pico_w": "btstack", "xiao_esp32s3": "nimble"}
board_stack = [None]


def use_board(board):
    """The board the probe emulates decides its BLE stack (before the firmware creates bluetooth.BLE())."""
    board_stack[0] = BOARD_STACKS.get(board)


def connect(port, host="127.0.0.1", pace=None, timeout_ms=5000):
    """Connect to the bridge listening on host:port; returns its hello. pace: virtual/real speed limit."""
    if _link[0] is not None:
        close()
    s = socket.socket()
    s.connect(socket.getaddrinfo(host, port)[0][-1])
    p = select.poll()
    p.register(s, select.POLLIN)
    _link[0] = s
    _link[1] = p
    _rx[0] = b""
    del _inbox[:]
    hello = None
    t0 = _host.ticks_ms()
    while hello is None:
        left = timeout_ms - _host.ticks_diff(_host.ticks_ms(), t0)
        if left <= 0:
            close()
            raise OSError(110)  # ETIMEDOUT: the bridge never said hello
        _read(left)
        for i in range(len(_inbox)):
            if _inbox[i].get("ev") == "hello":
                hello = _inbox.pop(i)
                break
    info.clear()
    info.update(hello)
    set_pace(pace)
    if _on_sleep not in vclock.hooks:
        vclock.hooks.append(_on_sleep)
    _sig[0] = 0
    _sig[1] = 0
    _sig[2] += 1
    watcher = select.poll()
    watcher.register(s, select.POLLIN)
    _thread.start_new_thread(_watch, (watcher, _sig[2]))
    return info


def set_pace(pace):
    # Pacing only holds the virtual clock back: what the firmware sees at a given virtual time is unchanged.
    _pace[0] = int(pace * 1000) if pace else 0
    _pace[1] = vclock.now_us()
    _pace[2] = _host.ticks_ms()


def connected():
    return _link[0] is not None


def close():
    _drop()
    if _on_sleep in vclock.hooks:
        vclock.hooks.remove(_on_sleep)


def _drop():
    s = _link[0]
    _link[0] = None
    _link[1] = None
    if s is not None:
        try:
            s.close()
        except OSError:
            pass


def listen(fn):
    if fn not in _listeners:
        _listeners.append(fn)


def send(kind, payload):
    s = _link[0]
    if s is None:
        return
    try:
        s.sendall(struct.pack("<HB", len(payload) + 1, kind) + payload)
    except OSError:
        _lost()


def send_json(obj):
    send(KIND_JSON, json.dumps(obj).encode())


def receive(timeout_ms=0):
    """The JSON objects that arrived from the bridge, oldest first (waits up to timeout_ms for the first)."""
    if not _inbox and _link[0] is not None:
        _read(timeout_ms)
    if not _inbox:
        return ()
    out = _inbox[:]
    del _inbox[:]
    return out


_READ_MAX = 16  # recv() calls per read: what arrives faster than it is taken waits for the next one


def _read(timeout_ms):
    # Reads what the socket holds (waiting up to timeout_ms for something; at most _READ_MAX chunks, so a
    # flood cannot grow the buffer without end) and parses complete frames.
    p = _link[1]
    chunks = 0
    while p is not None and chunks < _READ_MAX and p.poll(timeout_ms):
        chunks += 1
        try:
            data = _link[0].recv(4096)
        except OSError:
            data = b""
        if not data:
            _lost()
            return
        _rx[0] += data
        timeout_ms = 0
    buf = _rx[0]
    i = 0
    while len(buf) - i >= 3:
        n = buf[i] | (buf[i + 1] << 8)
        if len(buf) - i - 2 < n:
            break
        if buf[i + 2] == KIND_JSON:
            _inbox.append(json.loads(buf[i + 3:i + 2 + n]))
        i += 2 + n
    if i:
        _rx[0] = buf[i:]


def _lost():
    # The bridge went away: the radio is silent from now on, as if the antenna were cut.
    _drop()
    _inbox.append({"ev": "lost"})


def _watch(p, gen):
    # The watcher thread: no allocation, no parsing, nothing shared but _sig; the kick does the work.
    sleep_us = _host.sleep_us
    while _sig[2] == gen and _link[0] is not None:
        state = _sig[0]
        if state == 1:
            sleep_us(200)
            continue
        if state == 2:
            sleep_us(1000)
            _sig[0] = 0
            if _sig[1]:  # a delivery waits (deferred, or held back by the stack): kick again, data or not
                _sig[0] = 1
                try:
                    micropython.schedule(_kick, None)
                except RuntimeError:
                    _sig[0] = 2
                continue
        for _ in p.ipoll(20):
            _sig[0] = 1
            try:
                micropython.schedule(_kick, None)
            except RuntimeError:  # the scheduler's queue is full: try again shortly
                _sig[0] = 2
            break


def _heap_locked():
    micropython.heap_lock()
    return micropython.heap_unlock() > 0


def _kick(_):
    # Scheduled by the watcher, run by MicroPython between two bytecodes of whatever runs now.
    if vclock._cpu[1] or _heap_locked():
        _sig[1] = 1
        _sig[0] = 2
        return
    _service_safely()


def _service_safely():
    try:
        _service()
    except Exception as e:  # the stack's own failure (out of memory): never raised into the firmware's code
        sys.print_exception(e)


def _service():
    _sig[0] = 0
    _sig[1] = 0
    vclock.enter()
    try:
        for fn in _listeners:
            fn()
    finally:
        vclock.leave()


def retry():
    """The stack holds an event back (not yet due): the watcher kicks again in a millisecond."""
    _sig[1] = 1
    _sig[0] = 2


def enter():
    """A call into the stack (bluetooth.BLE's methods): the board's code, not the firmware's."""
    vclock.enter()


def leave():
    vclock.leave()
    if _sig[1] and not vclock._cpu[1] and not _heap_locked():
        _service_safely()  # an event arrived while the stack was busy: delivered as the call returns


def _on_sleep():
    if _pace[0] and not vclock._state[1]:
        while True:
            ahead_ms = (vclock.now_us() - _pace[1]) // _pace[0] - _host.ticks_diff(_host.ticks_ms(), _pace[2])
            if ahead_ms <= 0:
                break
            if _link[0] is None:
                _host.sleep_ms(ahead_ms)
            else:
                _read(ahead_ms)
    _sig[0] = 0
    _sig[1] = 0
    for fn in _listeners:
        fn()
