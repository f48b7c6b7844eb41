# The firmware packer against the shared protocol v1 test vectors (docs/protocol.md).
import json
import binascii
import micropython
import packet
from mptest import eq

with open("tests/vectors/protocol_v1.json") as f:
    VECTORS = json.load(f)


def _hex(b):
    return binascii.hexlify(b).decode()


def test_every_sample_vector_packs_to_its_bytes():
    buf = bytearray(packet.SAMPLE_SIZE)
    for v in VECTORS["samples"]:
        f = v["fields"]
        packet.pack_sample(buf, 0, f["seq"], f["t"], f["needle_angle"], f["guide_angle"], f["depth"],
                           f["tip_depth"], f["pitch"], f["roll"], f["flags"])
        eq(_hex(buf), v["hex"], v["name"])


def test_batches_pack_back_to_back():
    for b in VECTORS["batches"]:
        want = binascii.unhexlify(b["hex"])
        buf = bytearray(len(want))
        n = len(want) // packet.SAMPLE_SIZE
        by_seq = {}
        for v in VECTORS["samples"]:
            by_seq[v["fields"]["seq"]] = v["fields"]
        for i in range(n):
            f = by_seq[b["seqs"][i]]
            packet.pack_sample(buf, i * packet.SAMPLE_SIZE, f["seq"], f["t"], f["needle_angle"], f["guide_angle"],
                               f["depth"], f["tip_depth"], f["pitch"], f["roll"], f["flags"])
        eq(bytes(buf), want, b["name"])


def test_flag_bits_match_the_vector_names():
    for i, name in enumerate(VECTORS["flag_names"]):
        eq(getattr(packet, "F_" + name), 1 << i, name)


def test_records_pack_to_their_bytes():
    recs = {}
    for r in VECTORS["records"]:
        recs[r["name"]] = r
    buf = bytearray(packet.STATUS_SIZE)
    f = recs["status"]["fields"]
    packet.pack_status(buf, f["state"], f["battery_pct"], f["battery_mv"], f["flags"], f["dropped"], f["rate_hz"],
                       f["calibration_id"], f["fifo_overruns"], f["uptime_s"], f["loop_load_pct"])
    eq(_hex(buf), recs["status"]["hex"], "status")
    buf = bytearray(packet.RESULT_SIZE)
    f = recs["result"]["fields"]
    packet.pack_result(buf, f["opcode"], f["token"], f["code"], f["value"])
    eq(_hex(buf), recs["result"]["hex"], "result")
    buf = bytearray(packet.CONFIG_SIZE)
    f = recs["config"]["fields"]
    packet.pack_config(buf, f["guide_angle"], f["needle_length"], f["nogo_depth"], f["nogo_margin"], f["rate_hz"],
                       f["calibration_id"], f["cal_points"], f["tare"])
    eq(_hex(buf), recs["config"]["hex"], "config")


def test_command_opcodes_match_the_vectors():
    for c in VECTORS["commands"]:
        eq(getattr(packet, "OP_" + c["opname"]), c["opcode"], c["name"])


def test_status_counters_saturate():
    buf = bytearray(packet.STATUS_SIZE)
    packet.pack_status(buf, 1, 50, 3700, 0, 70000, 200, 0, 1 << 20, 5)
    eq(buf[8] | buf[9] << 8, 0xFFFF, "dropped")
    eq(buf[14] | buf[15] << 8, 0xFFFF, "overruns")
    eq(buf[19], 255, "the loop's load, not given: unknown")
    packet.pack_status(buf, 1, 50, 3700, 0, 0, 200, 0, 0, 1 << 30, 101)
    eq(buf[16] | buf[17] << 8 | buf[18] << 16, 0xFFFFFF, "uptime saturates at 24 bits")
    eq(buf[19], 255, "a load over 100 % is not a load")


def test_unit_conversions_round_and_saturate():
    eq(packet.to_cdeg(30004), 3000)
    eq(packet.to_cdeg(30005), 3001)
    eq(packet.to_cdeg(-30005), -3001)
    eq(packet.to_cdeg(-30004), -3000)
    eq(packet.to_cdeg(10 ** 7), 32767)
    eq(packet.to_cdeg(-(10 ** 7)), -32767)  # never NA by saturation
    eq(packet.to_d10um(25495), 2550)
    eq(packet.to_d10um(-4), 0)
    eq(packet.to_d10um(-5), -1)
    eq(packet.to_d10um(400000), 32767)


def _pack_many(buf, n):
    micropython.heap_lock()
    try:
        for i in range(n):
            off = (i % 12) * 20
            packet.pack_sample(buf, off, i, i * 1200, packet.to_cdeg(30123 + i), 3000, packet.to_d10um(i * 7),
                               packet.NA, -15, 23, packet.F_MOVING)
    finally:
        micropython.heap_unlock()


def test_packing_allocates_nothing():
    buf = bytearray(240)
    _pack_many(buf, 5000)  # MemoryError under heap_lock if anything allocated
    eq(buf[0] | buf[1] << 8, 4992 & 0xFFFF)
