# The sample ring between the sampling loop and the links.
import micropython
import packet
from ring import SampleRing
from mptest import eq


def _push(r, seq):
    off = r.slot()
    packet.pack_sample(r.buf, off, seq, seq * 100, 0, 0, 0, 0, 0, 0, 0)


def _seqs(out, n):
    return [out[i * 20] | out[i * 20 + 1] << 8 for i in range(n)]


def test_fifo_order_across_the_wrap():
    r = SampleRing(5)
    rd = r.reader()
    out = bytearray(12 * 20)
    for s in range(3):
        _push(r, s)
    eq(_seqs(out, rd.drain_into(out, 2)), [0, 1])
    for s in range(3, 7):
        _push(r, s)
    eq(rd.count, 5)
    n = rd.drain_into(out, 12)
    eq(_seqs(out, n), [2, 3, 4, 5, 6])
    eq(rd.count, 0)
    eq(rd.drain_into(out, 12), 0)


def test_full_ring_drops_the_oldest_and_counts():
    r = SampleRing(4)
    rd = r.reader()
    out = bytearray(4 * 20)
    for s in range(10):
        _push(r, s)
    eq(rd.dropped, 6)
    eq(_seqs(out, rd.drain_into(out, 4)), [6, 7, 8, 9])
    rd.reset_dropped()
    eq(rd.dropped, 0)


def test_each_reader_has_its_own_pace_and_losses():
    r = SampleRing(4)
    fast = r.reader()
    slow = r.reader()
    out = bytearray(4 * 20)
    for s in range(3):
        _push(r, s)
    eq(_seqs(out, fast.drain_into(out, 4)), [0, 1, 2])
    for s in range(3, 6):
        _push(r, s)
    eq(_seqs(out, fast.drain_into(out, 4)), [3, 4, 5])
    eq(fast.dropped, 0)
    eq(_seqs(out, slow.drain_into(out, 4)), [2, 3, 4, 5])  # six unread in a ring of four
    eq(slow.dropped, 2)


def _steady(r, rd, out, n):
    micropython.heap_lock()
    try:
        for i in range(n):
            off = r.slot()
            packet.pack_sample(r.buf, off, i, i, 1, 2, 3, 4, 5, 6, 0)
            if i % 3 == 2:
                rd.drain_into(out, 12)
    finally:
        micropython.heap_unlock()


def test_producing_and_draining_allocate_nothing():
    r = SampleRing(64)
    rd = r.reader()
    r.reader()  # a second link that never reads: it loses samples, the first does not
    out = bytearray(12 * 20)
    _steady(r, rd, out, 3000)
    eq(rd.dropped, 0)


def test_copy_oldest_leaves_the_samples_until_consumed():
    r = SampleRing(4)
    rd = r.reader()
    out = bytearray(4 * 20)
    for s in range(6):  # wraps: slots hold 2..5
        _push(r, s)
    eq(_seqs(out, rd.copy_oldest(out, 3)), [2, 3, 4])
    eq(rd.count, 4)
    rd.consume(2)
    eq(_seqs(out, rd.copy_oldest(out, 4)), [4, 5])
