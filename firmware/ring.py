# A ring of packed protocol samples between the sampling loop (producer) and a link (consumer).
#
# The loop must never wait for a link: when the ring is full the oldest sample is dropped and counted, so a slow
# or absent central costs old samples, never the loop's timing.
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
    def __init__(self, capacity=256):
        self.capacity = capacity
        self.buf = bytearray(capacity * _SIZE)
        self.head = 0  # next slot to write
        self.count = 0
        self.dropped = 0  # since the last reset_dropped(), saturating at 2^30 - 1
        self.peek_off = 0

    def slot(self):
        # Offset of the slot for the next sample; the caller packs into buf at it. May drop the oldest.
        off = self.head * _SIZE
        self.head += 1
        if self.head == self.capacity:
            self.head = 0
        if self.count == self.capacity:
            if self.dropped < 0x3FFFFFFF:
                self.dropped += 1
        else:
            self.count += 1
        return off

    def peek(self, max_n):
        # How many (<= max_n) of the oldest samples lie contiguous in buf from byte offset self.peek_off;
        # nothing is removed. (Two results without a tuple: a tuple would be a heap allocation.)
        n = self.count if self.count < max_n else max_n
        first = self.head - self.count
        if first < 0:
            first += self.capacity
        if first + n > self.capacity:
            n = self.capacity - first
        self.peek_off = first * _SIZE
        return n

    def consume(self, n):
        self.count -= n if n < self.count else self.count

    def drain_into(self, out, max_n):
        # Copy up to max_n oldest samples into out (a bytearray of at least max_n * 20) across the wrap;
        # returns how many. The link sends them in one notification.
        total = 0
        while total < max_n and self.count:
            n = self.peek(max_n - total)
            _copy(out, total * _SIZE, self.buf, self.peek_off, n * _SIZE)  # type: ignore[arg-type]  # viper ptr8
            self.consume(n)
            total += n
        return total

    def reset_dropped(self):
        self.dropped = 0

    def clear(self):
        self.count = 0


def _check_layout():
    if packet.SAMPLE_SIZE != _SIZE:
        raise ValueError("ring slot size differs from the protocol's sample size")


_check_layout()
