# Sample lines on the serial console: "NT1 <hex>\n", max_batch samples a line, nothing allocated.
import binascii
import io
import micropython
import packet
from ring import SampleRing
from serial_link import SerialLink
from mptest import eq


class CountingSink:
    def __init__(self):
        self.bytes = 0
        self.lines = 0

    def write(self, buf, off, n):
        self.bytes += n
        self.lines += 1
        return n


def _fill(r, first, n):
    for i in range(first, first + n):
        packet.pack_sample(r.buf, r.slot(), i, i * 1200, -4500, 3000, i, packet.NA, 7, -7, packet.F_TWITCH)


def test_lines_carry_the_packed_samples_in_order():
    r = SampleRing(32)
    out = io.BytesIO()
    link = SerialLink(r, out, max_batch=4)
    _fill(r, 0, 10)
    eq(link.service(), 10)
    lines = out.getvalue().split(b"\n")
    eq(lines[-1], b"")
    eq(len(lines) - 1, 3)  # 4 + 4 + 2
    want = bytearray(20)
    seq = 0
    for line in lines[:-1]:
        eq(line[:4], b"NT1 ")
        raw = binascii.unhexlify(line[4:])
        for k in range(len(raw) // 20):
            packet.pack_sample(want, 0, seq, seq * 1200, -4500, 3000, seq, packet.NA, 7, -7, packet.F_TWITCH)
            eq(raw[k * 20:(k + 1) * 20], bytes(want), "sample %d" % seq)
            seq += 1
    eq(seq, 10)
    eq(link.service(), 0)


def _steady(r, link, n):
    micropython.heap_lock()
    try:
        for i in range(n):
            packet.pack_sample(r.buf, r.slot(), i, i, 1, 2, 3, 4, 5, 6, 0)
            if i % 4 == 3:
                link.service()
    finally:
        micropython.heap_unlock()


def test_streaming_allocates_nothing():
    r = SampleRing(64)
    sink = CountingSink()
    link = SerialLink(r, sink, max_batch=12)
    _steady(r, link, 4000)
    eq(link.sent, 4000)
    eq(sink.bytes, 1000 * (4 + 4 * 40 + 1))
