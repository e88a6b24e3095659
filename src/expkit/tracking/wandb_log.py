"""Read W&B's offline run log (``run-<id>.wandb``); wandb >= 0.30 ships no reader.

The format: a 7-byte file header (``:W&B``, magic 0xBEE1 little-endian, version byte), then
32 KiB blocks of chunks. Each chunk has a 7-byte header (crc32 u32, length u16, type u8:
1 full, 2 first, 3 middle, 4 last); a block tail shorter than 7 bytes is zero padding.
A full record (one chunk, or first+middle*+last) is a serialized ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_record_bytes(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run log (bad header)")
    pos, pending = HEADER_SIZE, b""
    while pos + HEADER_SIZE <= len(data):
        left_in_block = BLOCK_SIZE - pos % BLOCK_SIZE
        if left_in_block < HEADER_SIZE:  # zero padding at the end of a block
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER_SIZE])
        if kind == 0 and length == 0:  # unwritten tail
            break
        payload = data[pos + HEADER_SIZE : pos + HEADER_SIZE + length]
        pos += HEADER_SIZE + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pending = payload
        elif kind == MIDDLE:
            pending += payload
        elif kind == LAST:
            yield pending + payload
            pending = b""


def read_run_log(path: Path) -> dict[str, Any]:
    """Summarize an offline run log: run id/group/name, config, history rows, summary, exit code."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"run": {}, "config": {}, "history": [], "summary": {}, "exit_code": None}
    for raw in iter_record_bytes(path):
        record = pb.Record()
        try:
            record.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a record cut off by a killed writer: the rest is still read
            continue
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            out["run"] = {"id": run.run_id, "project": run.project, "group": run.run_group,
                          "name": run.display_name, "tags": list(run.tags)}
            out["config"].update(_items(run.config.update))
        elif kind == "config":
            out["config"].update(_items(record.config.update))
        elif kind == "history":
            out["history"].append(_items(record.history.item))
        elif kind == "summary":
            out["summary"].update(_items(record.summary.update))
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def _items(items) -> dict[str, Any]:
    result = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        result[key] = json.loads(item.value_json) if item.value_json else None
    return result


def find_run_logs(root: Path) -> list[Path]:
    """All ``.wandb`` run logs under ``root``, one per W&B run segment (not W&B's ``latest-run``
    link to the newest, nor a copy of it made by copying a run directory)."""
    return sorted(p for p in Path(root).rglob("run-*.wandb") if "latest-run" not in p.parts)
