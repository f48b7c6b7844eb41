# Range checker for fixed-point firmware modules, run on MicroPython.
#
# The unix port is 64-bit: its small ints and viper words never show a 31/32-bit overflow. This module loads a
# firmware module's source as plain Python (the @micropython.viper / native decorators removed, so the same
# statements run with Python int semantics, identical to viper's as long as nothing wraps) and feeds it Checked
# values: every arithmetic result, array load and array store is checked against the board's small-int range
# |v| < 2^30, and the largest magnitude seen is recorded. viper's ptr32 becomes a checking view of the buffer;
# int() passes Checked values through, so a viper cast of a call result keeps being checked.
#
#   mods = load(["fixmath", "attitude"])          # later modules import the checked earlier ones
#   est = mods["attitude"].Attitude(); est.update(C(1), ...)
#   load(["fixmath"], patch={"fixmath": [("old text", "new text")]})   # a deliberately broken variant
import sys

LIMIT = 1 << 30
PEAK = [0, ""]  # largest |value| seen, and where (the operation)
_int = int


class RangeError(Exception):
    pass


def _chk(v, what):
    if v >= LIMIT or v <= -LIMIT:
        raise RangeError("%s = %d is outside +-2^30" % (what, v))
    a = -v if v < 0 else v
    if a > PEAK[0]:
        PEAK[0] = a
        PEAK[1] = what
    return v


def _v(x):
    return x.v if isinstance(x, C) else x


class C:
    """A checked int."""

    def __init__(self, v, what="value"):
        self.v = _chk(_v(v), what)

    def __repr__(self):
        return "C(%d)" % self.v

    def __add__(self, o):
        return C(self.v + _v(o), "+")

    def __radd__(self, o):
        return C(_v(o) + self.v, "+")

    def __sub__(self, o):
        return C(self.v - _v(o), "-")

    def __rsub__(self, o):
        return C(_v(o) - self.v, "-")

    def __mul__(self, o):
        return C(self.v * _v(o), "*")

    def __rmul__(self, o):
        return C(_v(o) * self.v, "*")

    def __floordiv__(self, o):
        return C(self.v // _v(o), "//")

    def __rfloordiv__(self, o):
        return C(_v(o) // self.v, "//")

    def __mod__(self, o):
        return C(self.v % _v(o), "%")

    def __rmod__(self, o):
        return C(_v(o) % self.v, "%")

    def __lshift__(self, o):
        return C(self.v << _v(o), "<<")

    def __rlshift__(self, o):
        return C(_v(o) << self.v, "<<")

    def __rshift__(self, o):
        return C(self.v >> _v(o), ">>")

    def __rrshift__(self, o):
        return C(_v(o) >> self.v, ">>")

    def __and__(self, o):
        return C(self.v & _v(o), "&")

    def __rand__(self, o):
        return C(_v(o) & self.v, "&")

    def __or__(self, o):
        return C(self.v | _v(o), "|")

    def __ror__(self, o):
        return C(_v(o) | self.v, "|")

    def __xor__(self, o):
        return C(self.v ^ _v(o), "^")

    def __neg__(self):
        return C(-self.v, "neg")

    def __lt__(self, o):
        return self.v < _v(o)

    def __le__(self, o):
        return self.v <= _v(o)

    def __gt__(self, o):
        return self.v > _v(o)

    def __ge__(self, o):
        return self.v >= _v(o)

    def __eq__(self, o):
        return self.v == _v(o)

    def __ne__(self, o):
        return self.v != _v(o)

    def __bool__(self):
        return self.v != 0

    def __int__(self):
        return self.v

    def __hash__(self):
        return hash(self.v)


class _Ptr:
    """viper ptr32 on an array: loads come back Checked (signed, as on a 32-bit board); stores are checked."""

    def __init__(self, buf):
        self.buf = buf

    def __getitem__(self, i):
        return C(self.buf[_v(i)], "load")

    def __setitem__(self, i, x):
        self.buf[_v(i)] = _chk(_v(x), "store")


def _cast_int(x=0):
    if isinstance(x, C):
        return x
    return _int(x)


class _Module:
    pass


def _indent(line):
    n = 0
    while n < len(line) and line[n] == " ":
        n += 1
    return n


def _wrap_literals(code):
    # Integer literals become C(...) so that a comparison whose left side started life as a literal
    # (`bit > n`) still reaches C's methods: MicroPython does not reflect comparisons onto the right operand.
    out = []
    i = 0
    n = len(code)
    while i < n:
        ch = code[i]
        if ch == '"' or ch == "'":
            j = code.find(ch, i + 1)
            j = n - 1 if j < 0 else j
            out.append(code[i:j + 1])
            i = j + 1
            continue
        if ch.isdigit() and (i == 0 or not (code[i - 1].isalpha() or code[i - 1].isdigit()
                                            or code[i - 1] in "_.")):
            j = i + 1
            if ch == "0" and j < n and code[j] in "xX":
                j += 1
            while j < n and (code[j].isdigit() or code[j] in "abcdefABCDEF"):
                j += 1
            if j < n and (code[j] == "." or code[j].isalpha() or code[j] == "_"):
                out.append(code[i:j])  # a float or something else: leave it
            else:
                out.append("C(" + code[i:j] + ")")
            i = j
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def source(name, patch=()):
    """Firmware source with viper/native decorators removed; in the bodies of those functions, integer
    literals are Checked (comments dropped, strings left alone)."""
    with open("firmware/" + name + ".py") as f:
        text = f.read()
    for old, new in patch:
        if old not in text:
            raise ValueError("patch target not found in %s: %r" % (name, old))
        text = text.replace(old, new)
    lines = []
    body = -1  # indentation of the def whose body is being rewritten, -1 outside
    pending = False
    for line in text.split("\n"):
        s = line.strip()
        if s == "@micropython.viper" or s == "@micropython.native":
            pending = True
            continue
        if pending and s.startswith("def "):
            pending = False
            body = _indent(line)
            lines.append(line)
            continue
        if body >= 0 and s and _indent(line) <= body:
            body = -1
        if body >= 0 and s:
            k = line.find("#")
            if k >= 0 and line.count('"', 0, k) % 2 == 0:
                line = line[:k]
            line = _wrap_literals(line)
        lines.append(line)
    return "\n".join(lines)


def load(names, patch=None):
    """Checked, decorator-free copies of firmware modules, in dependency order; returns {name: module}."""
    patch = patch or {}
    saved = {}
    mods = {}
    try:
        for name in names:
            ns = {"__name__": name, "ptr32": _Ptr, "int": _cast_int, "C": C}
            code = compile(source(name, patch.get(name, ())), "firmware/" + name + ".py", "exec")
            exec(code, ns)
            m = _Module()
            for k in ns:
                setattr(m, k, ns[k])
            mods[name] = m
            saved[name] = sys.modules.get(name)
            sys.modules[name] = m  # so the next module's `import name` binds the checked copy
    finally:
        for name in saved:
            if saved[name] is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = saved[name]
    return mods


def reset_peak():
    PEAK[0] = 0
    PEAK[1] = ""


def peak_log2():
    v = PEAK[0]
    n = 0
    while (1 << n) <= v:
        n += 1
    return n  # number of bits: |v| < 2^n
