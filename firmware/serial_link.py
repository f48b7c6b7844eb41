# Samples as text lines on the USB serial console, for a board on a cable and for the virtual probe's pipe:
#   NT1 <hex of one measurement notification: n samples of protocol v1>\n
# Lines are plain ASCII so they pass the REPL console unchanged; anything else on the console (log lines,
# the boot banner) is not a sample line and the host skips it.
import micropython
import sys

_PREFIX = b"NT1 "
_HEX = b"0123456789abcdef"


@micropython.viper
def _hexlify(dst: ptr8, off: int, src: ptr8, n: int, digits: ptr8) -> int:
    # Write n bytes of src as lowercase hex into dst at off, then a newline; returns the end offset.
    j = off
    for i in range(n):
        b = src[i]
        dst[j] = digits[b >> 4]
        dst[j + 1] = digits[b & 15]
        j += 2
    dst[j] = 10
    return j + 1


class SerialLink:
    def __init__(self, ring, stream=None, max_batch=12):
        self.ring = ring.reader()
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.max_batch = max_batch
        self.raw = bytearray(20 * max_batch)
        self.line = bytearray(len(_PREFIX) + 40 * max_batch + 1)
        self.line[0:len(_PREFIX)] = _PREFIX
        self.sent = 0

    def service(self):
        # Send everything queued, max_batch samples a line; returns how many samples went out.
        total = 0
        while True:
            n = self.ring.drain_into(self.raw, self.max_batch)
            if not n:
                return total
            end = _hexlify(self.line, 4, self.raw, n * 20, _HEX)  # type: ignore[arg-type]  # viper ptr8 takes buffers
            self.stream.write(self.line, 0, end)
            total += n
            self.sent += n
