"""Read metrics back from an offline W&B run (``run-*.wandb``) without syncing it.

The file is a LevelDB-style log of 32 KiB blocks holding protobuf ``Record`` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK = 32768
_HEADER = struct.Struct("<IHB")  # crc32, length, chunk type (1 full, 2 first, 3 middle, 4 last)


def _records(data: bytes):
    pos, buf = 7, b""  # file header: b":W&B" + 3 bytes
    while pos + _HEADER.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER.size:
            pos += left
            continue
        _, length, kind = _HEADER.unpack_from(data, pos)
        pos += _HEADER.size
        if kind == 0 and length == 0:
            break
        buf += data[pos : pos + length]
        pos += length
        if kind in (1, 4):
            yield buf
            buf = b""


def read_history(run_file: str | Path) -> dict[str, list]:
    """Every logged history value per key, in logging order (values decoded from JSON)."""
    from wandb.proto import wandb_internal_pb2 as pb

    history: dict[str, list] = {}
    for raw in _records(Path(run_file).read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        if rec.WhichOneof("record_type") != "history":
            continue
        for item in rec.history.item:
            key = item.key or "/".join(item.nested_key)
            history.setdefault(key, []).append(json.loads(item.value_json))
    return history


def find_runs(folder: str | Path) -> list[Path]:
    """All ``run-*.wandb`` files below ``folder``."""
    return sorted(Path(folder).rglob("run-*.wandb"))
