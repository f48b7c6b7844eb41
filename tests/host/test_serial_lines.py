"""Parsing the firmware's serial sample lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from needletrack.link.serial_lines import parse_line
from needletrack.protocol import ProtocolError

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "protocol_v1.json").read_text())


def test_a_sample_line_decodes_to_its_samples():
    batch = VECTORS["batches"][0]
    samples = parse_line(b"NT1 " + batch["hex"].encode() + b"\r\n")
    assert samples is not None and [s.seq for s in samples] == batch["seqs"]


@pytest.mark.parametrize("line", [b"", b"NeedleTrack 0.1.0 booting", b">>> ", b"nt1 00"])
def test_other_console_lines_are_not_samples(line):
    assert parse_line(line) is None


@pytest.mark.parametrize("line", [b"NT1 zz", b"NT1 0102", b"NT1 " + b"00" * 20])
def test_a_broken_sample_line_raises(line):
    with pytest.raises(ProtocolError):
        parse_line(line)
