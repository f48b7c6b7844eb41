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
    out = bytearray(12 * 20)
    for s in range(3):
        _push(r, s)
    eq(_seqs(out, r.drain_into(out, 2)), [0, 1])
    for s in range(3, 7):
        _push(r, s)
    eq(r.count, 5)
    n = r.drain_into(out, 12)
    eq(_seqs(out, n), [2, 3, 4, 5, 6])
    eq(r.count, 0)
    eq(r.drain_into(out, 12), 0)


def test_full_ring_drops_the_oldest_and_counts():
    r = SampleRing(4)
    out = bytearray(4 * 20)
    for s in range(10):
        _push(r, s)
    eq(r.dropped, 6)
    eq(_seqs(out, r.drain_into(out, 4)), [6, 7, 8, 9])
    r.reset_dropped()
    eq(r.dropped, 0)


def _steady(r, out, n):
    micropython.heap_lock()
    try:
        for i in range(n):
            off = r.slot()
            packet.pack_sample(r.buf, off, i, i, 1, 2, 3, 4, 5, 6, 0)
            if i % 3 == 2:
                r.drain_into(out, 12)
    finally:
        micropython.heap_unlock()


def test_producing_and_draining_allocate_nothing():
    r = SampleRing(64)
    out = bytearray(12 * 20)
    _steady(r, out, 3000)
    eq(r.dropped, 0)


def test_copy_oldest_leaves_the_samples_until_consumed():
    r = SampleRing(4)
    out = bytearray(4 * 20)
    for s in range(6):  # wraps: slots hold 2..5
        _push(r, s)
    eq(_seqs(out, r.copy_oldest(out, 3)), [2, 3, 4])
    eq(r.count, 4)
    r.consume(2)
    eq(_seqs(out, r.copy_oldest(out, 4)), [4, 5])
