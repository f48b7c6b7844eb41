# Control commands (docs/protocol.md, "Control commands"), whatever link they arrive on.
#
# Every command is validated completely before anything changes: a command answered with anything but OK has
# changed nothing, on the device or in its files. Configuration changes are saved through the store first and
# applied only once saved. Runs in the main loop between sampling batches, never in an interrupt: it may
# allocate.
import struct

import packet
import store
import depth as depth_mod

# Opcodes that change configuration or calibration, or restart the device: bonded, encrypted links only.
_PROTECTED = (packet.OP_SET_GUIDE_ANGLE, packet.OP_SET_NEEDLE_LENGTH, packet.OP_SET_NOGO, packet.OP_SET_OUTPUT_RATE,
              packet.OP_TARE, packet.OP_CAL_BEGIN, packet.OP_CAL_POINT, packet.OP_CAL_COMMIT, packet.OP_CAL_ABORT,
              packet.OP_REBOOT)

_PAYLOAD = {
    packet.OP_SET_GUIDE_ANGLE: "<h",
    packet.OP_SET_NEEDLE_LENGTH: "<H",
    packet.OP_SET_NOGO: "<hH",
    packet.OP_SET_OUTPUT_RATE: "<H",
    packet.OP_TARE: "",
    packet.OP_CAL_BEGIN: "",
    packet.OP_CAL_POINT: "<h",
    packet.OP_CAL_COMMIT: "",
    packet.OP_CAL_ABORT: "",
    packet.OP_IDENTIFY: "<B",
    packet.OP_REBOOT: "",
    packet.OP_READ_CONFIG: "",
    packet.OP_READ_STATUS: "",
    packet.OP_READ_FIELD: "<B",
    packet.OP_CAL_RESIDUAL: "<B",
}

MIN_CAL_POINTS = 8
MAX_CAL_POINTS = 255


class Control:
    """Applies commands to a device: anything with the attributes used below (firmware/main.py's Device)."""

    def __init__(self, device):
        self.dev = device
        self.result = bytearray(packet.RESULT_SIZE)
        self.calibrating = False
        self.jig_um = []
        self.angles = []
        self.residuals = None  # per point of the last calibration committed since boot: um, or packet.NA32
        self.reboot_pending = False
        self.identify_s = 0

    def handle(self, data, encrypted):
        """Answer one command: returns (result record, extra record or None) to notify, in that order."""
        opcode = data[0] if len(data) > 0 else 0
        token = data[1] if len(data) > 1 else 0
        code, value, extra = self._dispatch(opcode, data, encrypted)
        packet.pack_result(self.result, opcode, token, code, value)
        return self.result, extra

    def _dispatch(self, opcode, data, encrypted):
        if len(data) < 2:
            return packet.R_BAD_LENGTH, 0, None
        fmt = _PAYLOAD.get(opcode)
        if fmt is None:
            return packet.R_UNKNOWN_OPCODE, 0, None
        if len(data) != 2 + (struct.calcsize(fmt) if fmt else 0):
            return packet.R_BAD_LENGTH, 0, None
        if opcode in _PROTECTED and not encrypted:
            return packet.R_NOT_PERMITTED, 0, None
        args = struct.unpack_from(fmt, data, 2) if fmt else ()
        return getattr(self, "_op_%d" % opcode)(*args)

    # -- configuration ------------------------------------------------------------------------------------

    def _save(self, **changes):
        cfg = dict(self.dev.cfg)
        cfg.update(changes)
        try:
            store.save_config(cfg)
        except store.StoreError:
            return packet.R_OUT_OF_RANGE, 0, None
        except OSError:
            return packet.R_STORE_FAILED, 0, None
        self.dev.apply_config(cfg)
        return packet.R_OK, 0, None

    def _op_1(self, cdeg):  # SET_GUIDE_ANGLE
        if not 1000 <= cdeg <= 8000:
            return packet.R_OUT_OF_RANGE, 0, None
        return self._save(guide_angle_mdeg=cdeg * 10)

    def _op_2(self, dmm):  # SET_NEEDLE_LENGTH
        if not 100 <= dmm <= 2000:
            return packet.R_OUT_OF_RANGE, 0, None
        return self._save(needle_length_um=dmm * 100)

    def _op_3(self, depth, margin):  # SET_NOGO
        if depth != packet.NA and not 100 <= depth <= 20000:
            return packet.R_OUT_OF_RANGE, 0, None
        if not 0 <= margin <= 2000:
            return packet.R_OUT_OF_RANGE, 0, None
        return self._save(nogo_depth_um=0 if depth == packet.NA else depth * 10, nogo_margin_um=margin * 10)

    def _op_4(self, hz):  # SET_OUTPUT_RATE
        if not 10 <= hz <= 1000:
            return packet.R_OUT_OF_RANGE, 0, None
        return self._save(rate_hz=hz)

    def _op_5(self):  # TARE
        disp = self.dev.depth.disp_um
        if disp == depth_mod.INVALID:
            return packet.R_BAD_STATE, 0, None
        code, _, _ = self._save(tare_um=disp)
        return code, disp, None

    # -- depth calibration with a jig -------------------------------------------------------------------

    def _op_6(self):  # CAL_BEGIN
        self.calibrating = True
        self.jig_um = []
        self.angles = []
        return packet.R_OK, 0, None

    def _op_7(self, d10um):  # CAL_POINT
        if not self.calibrating:
            return packet.R_BAD_STATE, 0, None
        if not 0 <= d10um <= 20000:
            return packet.R_OUT_OF_RANGE, 0, None
        if len(self.jig_um) >= MAX_CAL_POINTS:
            return packet.R_BAD_STATE, len(self.jig_um), None  # CAL_RESIDUAL's u8 index reaches no further
        est = self.dev.depth
        a = None if est.angle_a == depth_mod.INVALID else est.angle_a
        b = None if est.angle_b == depth_mod.INVALID else est.angle_b
        if a is None and b is None:
            return packet.R_BAD_STATE, 0, None  # no field: the magnet is not in the guide
        self.jig_um.append(d10um * 10)
        self.angles.append([a, b])
        return packet.R_OK, a if a is not None else b, None

    def _op_8(self):  # CAL_COMMIT
        if not self.calibrating:
            return packet.R_BAD_STATE, 0, None
        if len(self.jig_um) < MIN_CAL_POINTS:
            return packet.R_BAD_STATE, len(self.jig_um), None
        try:
            # Always against the factory table, so that recalibrating never compounds an earlier fit.
            cal, _ = depth_mod.fit_calibration(store.default_calibration(), self.jig_um, self.angles)
        except depth_mod.CalibrationError:
            return packet.R_OUT_OF_RANGE, 0, None
        # Worked out once, here: CAL_RESIDUAL answers from this list, whatever later points or aborts do.
        res = depth_mod.fit_residuals(store.default_calibration(), cal, self.jig_um, self.angles)
        try:
            cal_id = store.save_calibration(cal)
        except (OSError, store.StoreError):
            return packet.R_STORE_FAILED, 0, None
        self.dev.apply_calibration(cal)
        self.calibrating = False
        self.residuals = [packet.NA32 if r is None else r for r in res]
        return packet.R_OK, cal_id, None

    def _op_9(self):  # CAL_ABORT
        self.calibrating = False
        self.jig_um = []
        self.angles = []
        return packet.R_OK, 0, None

    # -- the rest -------------------------------------------------------------------------------------

    def _op_10(self, seconds):  # IDENTIFY
        if not 1 <= seconds <= 10:
            return packet.R_OUT_OF_RANGE, 0, None
        self.identify_s = seconds
        return packet.R_OK, 0, None

    def _op_11(self):  # REBOOT: the link restarts the device once this RESULT is out
        self.reboot_pending = True
        return packet.R_OK, 0, None

    def _op_12(self):  # READ_CONFIG
        return packet.R_OK, 0, self.dev.config_record()

    def _op_13(self):  # READ_STATUS
        return packet.R_OK, 0, self.dev.status_record()

    def _op_14(self, sensor):  # READ_FIELD: the live field angle, as CAL_POINT would record it now
        if sensor > 1:
            return packet.R_OUT_OF_RANGE, 0, None
        est = self.dev.depth
        if sensor >= est.n_sensors:
            return packet.R_BAD_STATE, 0, None  # the calibration in use reads one sensor only
        angle = est.angle_a if sensor == 0 else est.angle_b
        if angle == depth_mod.INVALID:
            return packet.R_BAD_STATE, 0, None  # weak, saturated or faulted: no field angle
        return packet.R_OK, angle, None

    def _op_15(self, index):  # CAL_RESIDUAL
        res = self.residuals
        if res is None:
            return packet.R_BAD_STATE, 0, None  # nothing committed since boot
        if index >= len(res):
            return packet.R_OUT_OF_RANGE, 0, None
        return packet.R_OK, res[index], None
