# Runs one firmware test module inside MicroPython and reports each test to the pytest harness.
#
#   micropython tests/firmware/mptest.py test_packet [test_name ...]
#
# Each test is framed by marker lines so the harness can attach everything printed in between to it:
#   @@MPTEST:BEGIN <name>
#   @@MPTEST:END <name> <passed|failed|skipped>
# followed, on failure or skip, by the traceback (or skip reason) and @@MPTEST:TB-END.
import sys
import io

MARK = "@@MPTEST:"


class Skip(Exception):
    pass


def skip(reason):
    raise Skip(reason)


def eq(got, want, what=""):
    if got != want:
        raise AssertionError("%s%r != %r" % (what + ": " if what else "", got, want))


def near(got, want, tol, what=""):
    if abs(got - want) > tol:
        raise AssertionError("%s%r not within %r of %r" % (what + ": " if what else "", got, tol, want))


def raises(exc_type, fn, *args):
    try:
        fn(*args)
    except exc_type as e:
        return e
    raise AssertionError("%s not raised by %r%r" % (exc_type.__name__, fn, args))


def lcg(seed):
    """A deterministic integer generator, independent of the port's random module: nxt(lo, hi) in [lo, hi]."""
    state = [seed & 0x7FFFFFFF]

    def nxt(lo, hi):
        state[0] = (state[0] * 1103515245 + 12345) & 0x7FFFFFFF
        return lo + state[0] % (hi - lo + 1)

    return nxt


def _run(modname, names):
    mod = __import__(modname)
    if not names:
        names = sorted(n for n in dir(mod) if n.startswith("test_"))
    for name in names:
        fn = getattr(mod, name, None)
        print(MARK + "BEGIN " + name)
        if fn is None:
            print(MARK + "END " + name + " failed")
            print("no test named %s in %s" % (name, modname))
            print(MARK + "TB-END")
            continue
        try:
            fn()
        except Skip as e:
            print(MARK + "END " + name + " skipped")
            print(e.args[0] if e.args else "")
            print(MARK + "TB-END")
        except BaseException as e:  # every failure, whatever its type, is reported
            s = io.StringIO()
            sys.print_exception(e, s)
            print(MARK + "END " + name + " failed")
            print(s.getvalue(), end="")
            print(MARK + "TB-END")
        else:
            print(MARK + "END " + name + " passed")


if __name__ == "__main__":
    _run(sys.argv[1], sys.argv[2:])
