# Chip drivers, one module per chip. Each takes the bus (a machine.I2C) and the chip's 7-bit address, reads
# into buffers it allocates once, and reports an absent or wrong chip as a SensorError naming chip and address.


class SensorError(OSError):
    """The chip is absent, is not the chip expected, or did not come out of reset.

    Raised while a driver identifies and sets up its chip (constructor, init(), setup()). It is an OSError, so
    code that handles a bus fault (the sampling loop re-probing a sensor) handles a missing or wrong chip the
    same way; str(e) names the chip and address, e.chip and e.addr give them. A bus error in the per-sample
    reads stays a plain OSError with its errno.
    """

    def __init__(self, message, chip=None, addr=None):
        super().__init__(message)
        self.chip = chip
        self.addr = addr


def errname(exc):
    """The errno name of an OSError (ENODEV, EIO, ETIMEDOUT...), or its number where the port has no table."""
    code = exc.args[0] if exc.args else 0
    try:
        import errno

        return errno.errorcode.get(code, str(code))
    except (ImportError, AttributeError):
        return str(code)


def not_found(chip, addr, exc):
    """The error for a chip that did not answer its identity read: "LSM6DSOX not found at I2C 0x6A (ENODEV)"."""
    return SensorError("%s not found at I2C 0x%02X (%s)" % (chip, addr, errname(exc)), chip, addr)


def chip_error(chip, addr, detail):
    """The error for a chip that answered but is wrong or misbehaves: "LSM6DSOX at I2C 0x6A: <detail>"."""
    return SensorError("%s at I2C 0x%02X: %s" % (chip, addr, detail), chip, addr)
