"""An OpenIGTLink client for the server tests, run in its own process as 3D Slicer would be.

    python tests/host/igtl_client.py HOST PORT [SECONDS]

Connects with pyigtl.OpenIGTLinkClient and prints one JSON object per line on stdout: {"event": "started"},
{"event": "connected"}, then one per message received ({"poll": n, "type": ..., "name": ..., ...}); ``poll``
numbers the reads of pyigtl's inbox, which keeps only the newest message per device, so messages of one poll
have no order among them. Commands on stdin: ``get TYPE NAME`` sends GET_TYPE for device NAME (``-`` for an
empty name); ``quit`` or the end of stdin ends the client, as does SECONDS (default 30).

POSITION is decoded here from the protocol's layout (x, y, z, ox, oy, oz, w as big-endian float32):
pyigtl 0.3.4's own PositionMessage reads another layout.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import threading
import time
from typing import Any

import numpy as np
import pyigtl
from pyigtl import messages


class Position(pyigtl.MessageBase):
    def __init__(self) -> None:
        super().__init__()
        self._message_type = "POSITION"
        self.values: tuple[float, ...] = ()
        self._valid_message = True

    def _unpack_content(self, content: bytes) -> None:
        self.values = struct.unpack(f">{len(content) // 4}f", content)


class Get(pyigtl.MessageBase):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(device_name=name)
        self._message_type = f"GET_{kind}"
        self._valid_message = True


def describe(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": msg.message_type, "name": msg.device_name, "timestamp": msg.timestamp,
                           "header_version": msg.header_version}
    if isinstance(msg, pyigtl.TransformMessage):
        out["matrix"] = np.asarray(msg.matrix, dtype=float).tolist()
    elif isinstance(msg, Position):
        out["position"] = list(msg.values[:3])
        out["quaternion"] = list(msg.values[3:])
    elif isinstance(msg, pyigtl.StringMessage):
        out["string"] = msg.string
    elif isinstance(msg, pyigtl.ImageMessage):
        image = np.ascontiguousarray(msg.image)
        out["shape"] = list(image.shape)
        out["dtype"] = str(image.dtype)
        out["sha256"] = hashlib.sha256(image.tobytes()).hexdigest()
        out["matrix"] = np.asarray(msg.ijk_to_world_matrix, dtype=float).tolist()
        out["coordinates"] = msg.world_coordinate_system
    return out


def emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


def commands(client: pyigtl.OpenIGTLinkClient, done: threading.Event) -> None:
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["quit"]:
            break
        if len(words) == 3 and words[0] == "get":
            client.send_message(Get(words[1], "" if words[2] == "-" else words[2]), wait=False)
    done.set()


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    messages.message_type_to_class_constructor["POSITION"] = Position
    client = pyigtl.OpenIGTLinkClient(host=host, port=port)
    emit({"event": "started"})
    done = threading.Event()
    threading.Thread(target=commands, args=(client, done), daemon=True).start()
    end = time.monotonic() + seconds
    connected = False
    poll = 0
    while not done.is_set() and time.monotonic() < end:
        if not connected and client.is_connected():
            connected = True
            emit({"event": "connected"})
        batch = client.get_latest_messages()
        if batch:
            poll += 1
            for msg in batch:
                emit({"poll": poll, **describe(msg)})
        time.sleep(0.002)
    client.stop()


if __name__ == "__main__":
    main()
