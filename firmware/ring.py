# A ring of packed protocol samples between the sampling loop (the one writer) and the links (readers).
#
# The loop must never wait for a link: a reader that falls a whole ring behind loses its oldest samples, counted,
# so a slow or absent central costs old samples, never the loop's timing, and never another link's samples.
import micropython
from micropython import const

import packet

_SIZE = const(20)  # packet.SAMPLE_SIZE


@micropython.viper
def _copy(dst: ptr8, doff: int, src: ptr8, soff: int, n: int):
    # A slice copy without the slice and memoryview objects that `dst[a:b] = src[c:d]` allocates.
    for i in range(n):
        dst[doff + i] = src[soff + i]


class SampleRing:
    # The loop writes each sample once; every link reads the ring through its own RingReader, at its own pace.
    def __init__(self, capacity=256):
        self.capacity = capacity
        self.buf = bytearray(capacity * _SIZE)
        self.head = 0  # next slot to write
        self.readers = []

    def reader(self):
        r = RingReader(self)
        self.readers.append(r)
        return r

    def slot(self):
        # Offset of the slot for the next sample; the caller packs into buf at it. A reader that is a whole
        # ring behind loses its oldest sample, counted in its `dropped`.
        off = self.head * _SIZE
        self.head += 1
        if self.head == self.capacity:
            self.head = 0
        for r in self.readers:
            r.pushed()
        return off


class RingReader:
    def __init__(self, ring):
        self.ring = ring
        self.count = 0  # samples written and not yet consumed by this reader
        self.dropped = 0  # since the last reset_dropped(), saturating at 2^30 - 1

    def pushed(self):
        if self.count == self.ring.capacity:
            if self.dropped < 0x3FFFFFFF:
                self.dropped += 1
        else:
            self.count += 1

    def consume(self, n):
        self.count -= n if n < self.count else self.count

    def copy_oldest(self, out, max_n):
        # Copy up to max_n oldest unread samples into out (a bytearray of at least max_n * 20) across the wrap,
        # without consuming them: a link consumes them only once its stack has taken them.
        ring = self.ring
        cap = ring.capacity
        total = 0
        count = self.count
        first = ring.head - count
        if first < 0:
            first += cap
        n = count if count < max_n else max_n
        while total < n:
            run = n - total
            if first + run > cap:
                run = cap - first
            _copy(out, total * _SIZE, ring.buf, first * _SIZE, run * _SIZE)  # type: ignore[arg-type]  # viper ptr8
            total += run
            first = 0
        return total

    def drain_into(self, out, max_n):
        # copy_oldest, then consume what was copied.
        n = self.copy_oldest(out, max_n)
        self.consume(n)
        return n

    def reset_dropped(self):
        self.dropped = 0

    def clear(self):
        self.count = 0


def _check_layout():
    if packet.SAMPLE_SIZE != _SIZE:
        raise ValueError("ring slot size differs from the protocol's sample size")


_check_layout()
