"""The host decoder against the shared protocol v1 test vectors (docs/protocol.md)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from needletrack import protocol
from needletrack.protocol import Flag, ProtocolError

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "protocol_v1.json").read_text())
SAMPLES = VECTORS["samples"]


@pytest.mark.parametrize("vector", SAMPLES, ids=[v["name"] for v in SAMPLES])
def test_sample_vector_decodes_to_its_values(vector):
    s = protocol.decode_sample(bytes.fromhex(vector["hex"]))
    want = vector["decoded"]
    assert s.seq == want["seq"]
    assert s.device_time_us == want["device_time_us"]
    for name in ("needle_angle_deg", "guide_angle_deg", "depth_mm", "tip_depth_mm", "pitch_deg", "roll_deg"):
        got = getattr(s, name)
        if want[name] is None:
            assert got is None, name
        else:
            assert got == pytest.approx(want[name], abs=1e-9), name
    assert s.flag_names == want["flags"]


def test_flag_names_follow_the_bit_order():
    assert [f.name for f in Flag] == VECTORS["flag_names"]
    assert [f.value for f in Flag] == [1 << i for i in range(len(Flag))]


@pytest.mark.parametrize("batch", VECTORS["batches"], ids=[b["name"] for b in VECTORS["batches"]])
def test_batched_notification_decodes_in_order(batch):
    samples = protocol.decode_notification(bytes.fromhex(batch["hex"]))
    assert [s.seq for s in samples] == batch["seqs"]


BAD = VECTORS["malformed_notifications"]


@pytest.mark.parametrize("vector", BAD, ids=[v["name"] for v in BAD])
def test_malformed_notification_raises_protocol_error(vector):
    with pytest.raises(ProtocolError):
        protocol.decode_notification(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", VECTORS["records"], ids=[v["name"] for v in VECTORS["records"]])
def test_record_vector_decodes_to_its_values(vector):
    rec = protocol.decode_record(bytes.fromhex(vector["hex"]))
    f = vector["fields"]
    if vector["name"].startswith("status"):
        # Version 2 carries the loop's load; a version 1 record (older firmware) reads without it.
        assert isinstance(rec, protocol.Status)
        assert (rec.state, rec.battery_pct, rec.battery_mv, int(rec.flags), rec.dropped, rec.rate_hz,
                rec.calibration_id, rec.fifo_overruns, rec.uptime_s, rec.loop_load_pct) == (
            f["state"], f["battery_pct"], f["battery_mv"], f["flags"], f["dropped"], f["rate_hz"],
            f["calibration_id"], f["fifo_overruns"], f["uptime_s"], f.get("loop_load_pct"))
    elif vector["name"] == "result":
        assert isinstance(rec, protocol.Result)
        assert (rec.opcode, rec.token, int(rec.code), rec.value) == (f["opcode"], f["token"], f["code"], f["value"])
    else:
        assert isinstance(rec, protocol.Config)
        assert rec.guide_angle_deg == pytest.approx(f["guide_angle"] / 100)
        assert rec.needle_length_mm == pytest.approx(f["needle_length"] / 10)
        assert rec.nogo_depth_mm is None and f["nogo_depth"] == protocol.NA
        assert rec.nogo_margin_mm == pytest.approx(f["nogo_margin"] / 100)
        assert (rec.rate_hz, rec.calibration_id, rec.cal_points) == (f["rate_hz"], f["calibration_id"],
                                                                      f["cal_points"])
        assert rec.tare_mm == pytest.approx(f["tare"] / 100)


BAD_RECORDS = VECTORS["malformed_records"]


@pytest.mark.parametrize("vector", BAD_RECORDS, ids=[v["name"] for v in BAD_RECORDS])
def test_malformed_record_raises_protocol_error(vector):
    with pytest.raises(ProtocolError):
        protocol.decode_record(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", VECTORS["commands"], ids=[v["name"] for v in VECTORS["commands"]])
def test_command_encodes_to_its_bytes(vector):
    op = protocol.Opcode[vector["opname"]]
    assert op == vector["opcode"]
    assert protocol.encode_command(op, vector["token"], *vector["args"]).hex() == vector["hex"]


def test_command_with_wrong_arguments_is_refused():
    with pytest.raises(ProtocolError):
        protocol.encode_command(protocol.Opcode.SET_NOGO, 1, 3500)
    with pytest.raises(ProtocolError):
        protocol.encode_command(protocol.Opcode.SET_NEEDLE_LENGTH, 1, -5)
    with pytest.raises(ProtocolError):
        protocol.encode_command(0x7F, 1)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data):
    try:
        samples = protocol.decode_notification(data)
    except ProtocolError:
        return
    assert len(samples) * protocol.SAMPLE_SIZE == len(data)
    for s in samples:
        assert 0 <= s.device_time_us < protocol.TICK_PERIOD_US


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, (1 << 30) - 1),
                          st.lists(st.integers(-32768, 32767), min_size=6, max_size=6),
                          st.integers(0, 0x0FFF)), min_size=1, max_size=12))
def test_any_well_formed_batch_decodes_exactly(rows):
    data = b"".join(struct.pack("<HIhhhhhhH", seq, t, *vals, flags | 0x1000) for seq, t, vals, flags in rows)
    samples = protocol.decode_notification(data)
    for s, (seq, t, vals, flags) in zip(samples, rows, strict=True):
        assert (s.seq, s.device_time_us, int(s.flags)) == (seq, t, flags)
        assert s.needle_angle_deg == (None if vals[0] == protocol.NA else pytest.approx(vals[0] / 100))
        assert s.roll_deg == (None if vals[5] == protocol.NA else pytest.approx(vals[5] / 100))


def test_the_field_and_residual_commands_take_one_byte_and_read_as_words_on_the_command_line():
    from needletrack import device_control as dc

    assert protocol.encode_command(protocol.Opcode.READ_FIELD, 5, 1) == bytes((0x0E, 5, 1))
    assert protocol.encode_command(protocol.Opcode.CAL_RESIDUAL, 6, 255) == bytes((0x0F, 6, 255))
    for bad in ((256,), (-1,), ()):
        with pytest.raises(ProtocolError):
            protocol.encode_command(protocol.Opcode.READ_FIELD, 1, *bad)
    assert dc.COMMANDS["field"][0] is protocol.Opcode.READ_FIELD
    assert dc.COMMANDS["cal-residual"][0] is protocol.Opcode.CAL_RESIDUAL
    assert dc._wire_args("field", ("1",)) == [1] and dc._wire_args("cal-residual", ("7",)) == [7]
    ok = protocol.ResultCode.OK

    def said(op: protocol.Opcode, code: protocol.ResultCode, value: int) -> str:
        return dc.describe_value(op, protocol.Result(int(op), 1, code, value))

    assert said(protocol.Opcode.READ_FIELD, ok, -98885) == " (field angle, mdeg: -98885)"
    assert said(protocol.Opcode.CAL_RESIDUAL, ok, -35) == " (residual, um: -35)"
    assert said(protocol.Opcode.CAL_RESIDUAL, ok, protocol.NA32) == " (no fit used this point)"
    assert said(protocol.Opcode.CAL_COMMIT, ok, 0xBEEF) == " (calibration id beef)"
    assert said(protocol.Opcode.CAL_COMMIT, protocol.ResultCode.BAD_STATE, 3) == " (value 3)"
