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

    def consume(self, n):
        self.count -= n if n < self.count else self.count

    def copy_oldest(self, out, max_n):
        # Copy up to max_n oldest samples into out (a bytearray of at least max_n * 20) across the wrap, without
        # removing them: a link consumes them only once the stack has taken them.
        total = 0
        count = self.count
        first = self.head - count
        if first < 0:
            first += self.capacity
        n = count if count < max_n else max_n
        while total < n:
            run = n - total
            if first + run > self.capacity:
                run = self.capacity - first
            _copy(out, total * _SIZE, self.buf, first * _SIZE, run * _SIZE)  # type: ignore[arg-type]  # viper ptr8
            total += run
            first = 0
        return total

    def drain_into(self, out, max_n):
        # copy_oldest, then remove what was copied.
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
