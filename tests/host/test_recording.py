"""The shared session recording format: incremental, never lost, never overwritten."""

from __future__ import annotations

import json

import numpy as np
import pytest

from needletrack import recording
from needletrack.protocol import Flag, Sample

NO_FLAGS = Flag(0)


def _sample(seq, depth=12.5, flags=NO_FLAGS):
    return Sample(seq, seq * 5000, 30.0, 30.0, depth, None if depth is None else depth / 2, -1.0, 2.0, flags)


def test_roundtrip_with_na_flags_gaps_and_events(tmp_path):
    with recording.RecordingWriter(tmp_path / "s", {"device": "sim"}, with_truth=True) as w:
        w.add_sample(_sample(65534), 1.0, 101.0)
        w.add_sample(_sample(65535, flags=Flag.TWITCH | Flag.NOGO_NEAR), 1.005, 101.005)
        w.add_sample(_sample(2, depth=None, flags=Flag.DEPTH_INVALID), 1.02, None)  # 0 and 1 lost
        w.add_truth(1.0, 30.0, 30.0, 12.5, 6.25, -1.0, 2.0)
    rec = recording.load(tmp_path / "s")
    assert rec.session["complete"] is True and rec.session["samples"] == 3 and rec.session["gaps"] == 1
    np.testing.assert_array_equal(rec.samples["seq"], [65534, 65535, 2])
    assert np.isnan(rec.samples["depth_mm"][2]) and np.isnan(rec.samples["host_time_s"][2])
    assert rec.flags[1] == Flag.TWITCH | Flag.NOGO_NEAR
    kinds = [(k, v) for _, k, v in rec.events]
    assert ("twitch", "1") in kinds and ("nogo_near", "1") in kinds and ("nogo_near", "0") in kinds
    assert ("gap", "2") in kinds and ("depth_invalid", "1") in kinds
    assert rec.truth is not None and rec.truth["depth_mm"][0] == pytest.approx(12.5)


def test_a_crash_keeps_every_row_and_marks_the_session_incomplete(tmp_path):
    with pytest.raises(KeyboardInterrupt), recording.RecordingWriter(tmp_path / "s", {}) as w:
        for i in range(500):
            w.add_sample(_sample(i), i * 0.005, None)
        raise KeyboardInterrupt
    rec = recording.load(tmp_path / "s")
    assert len(rec.samples["seq"]) == 500
    assert json.loads((tmp_path / "s" / "session.json").read_text())["complete"] is False


def test_an_existing_recording_is_never_overwritten(tmp_path):
    with recording.RecordingWriter(tmp_path / "s", {}) as w:
        w.add_sample(_sample(1), 0.0, None)
    with pytest.raises(FileExistsError):
        recording.RecordingWriter(tmp_path / "s", {})
    assert len(recording.load(tmp_path / "s").samples["seq"]) == 1


def test_flags_text_roundtrips_every_flag():
    for f in Flag:
        assert recording.parse_flags(recording.flags_text(f)) == f
    everything = Flag(0x0FFF)
    assert recording.parse_flags(recording.flags_text(everything)) == everything
