"""Benchmarks: each script prints a table and writes its figures to ``bench/results/*.json``."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_results(path: Path, document: Any, *, indent: int = 1) -> None:
    """Write a benchmark's ``document`` as JSON to ``path`` (folders made as needed) and say so.

    ``default=str`` keeps timestamps and paths readable instead of failing on them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=indent, default=str) + "\n")
    print(f"wrote {path}")


def read_json(path: Path) -> Any:
    """A JSON document from ``path``, gunzipped first where its name ends in ``.gz`` (campaign
    dumps are kept so, `bench/results/campaign_*.json.gz`: 4000 samples are ~0.5 MB gzipped)."""
    if path.suffix == ".gz":
        return json.loads(gzip.decompress(path.read_bytes()))
    return json.loads(path.read_text())


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` compactly to ``path``, gzipped where its name ends in ``.gz``."""
    text = json.dumps(document, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0: the same samples give the same bytes, so a re-dump is no change to git.
        path.write_bytes(gzip.compress(text.encode(), mtime=0))
    else:
        path.write_text(text)


def write_measurement(
    path: Path, cpu: str, summary: Any, rows: Any, settings: Mapping[str, Any]
) -> None:
    """Write a measuring benchmark's document (:func:`write_results`): when it finished, its
    ``settings``, the silicon it ran on (``cpu``, :func:`agent.environment.cpu_signature`), its
    ``summary`` and its raw ``rows``."""
    document = {
        "finished_at": datetime.now(UTC).isoformat(),
        **settings,
        "cpu": cpu,
        "summary": summary,
        "rows": rows,
    }
    write_results(path, document)
