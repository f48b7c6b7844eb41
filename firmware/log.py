# The firmware's log: the last lines it printed outside the sampling loop (the boot banner, "# " notes),
# kept in RAM so that they can be read through the REPL after they scrolled by or nobody was listening:
#   import log; log.dump()          (what `needletrack device logs` runs)
# A soft reset clears it, as it clears the heap: read it from a REPL entered without one (Ctrl-C, or
# `mpremote resume`). Every call formats and keeps a str, so it allocates: never call it from the loop.
from micropython import const

SIZE = const(32)

_lines: "list[str]" = [""] * SIZE
_count = [0]  # lines kept since boot; a list so that writing it is not a module-global assignment


def line(text):
    """Print text as one line of the serial console and keep it."""
    print(text)
    n = _count[0]
    _lines[n % SIZE] = text
    _count[0] = n + 1


def note(text):
    """A log line: "# " + text (the host skips "# " lines when it reads samples)."""
    line("# " + text)


def lines():
    """The kept lines, oldest first."""
    n = _count[0]
    first = n - SIZE if n > SIZE else 0
    return [_lines[i % SIZE] for i in range(first, n)]


def dropped():
    """How many lines printed since boot are no longer kept."""
    n = _count[0]
    return n - SIZE if n > SIZE else 0


def dump():
    if dropped():
        print("# log: %d earlier lines not kept" % dropped())
    for t in lines():
        print(t)
