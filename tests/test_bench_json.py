"""bench.read_json / write_json: campaign dumps round-trip, gzipped by name."""

from __future__ import annotations

import gzip
from pathlib import Path

from bench import read_json, write_json


def test_gz_and_plain_round_trip_the_same_document(tmp_path: Path) -> None:
    document = [{"op_type": "conv2d", "config": {"cin": 3}, "latency_ms": 0.25, "at": None}]
    for name in ("dump.json", "dump.json.gz"):
        write_json(tmp_path / name, document)
        assert read_json(tmp_path / name) == document
    raw = (tmp_path / "dump.json.gz").read_bytes()
    assert gzip.decompress(raw) == (tmp_path / "dump.json").read_bytes()


def test_gz_dump_is_byte_identical_when_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "dump.json.gz"
    write_json(path, {"a": 1})
    first = path.read_bytes()
    write_json(path, {"a": 1})
    assert path.read_bytes() == first
