"""Append-only JSONL store of LMM answers, keyed by image sha256 + setting hash.

Every record is flushed (and fsync'ed) as it is written, so a killed run loses at most the images in
flight; a torn last line from a kill is ignored on reload. Re-running a setting skips what is stored;
a new setting adds records and keeps the old ones.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def record_key(sha256: str, setting: str) -> str:
    return f"{sha256}:{setting}"


class DescriptionStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._load()
        self._fh = self.path.open("a", encoding="utf-8")

    def _load(self) -> None:
        with self.path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    # A kill mid-write leaves at most one torn line; anything else is worth a warning too.
                    log.warning("%s:%d: unreadable record skipped (torn write?)", self.path, lineno)
                    continue
                self.records[rec["key"]] = rec  # a later record for the same key wins (e.g. a retry)
        # A torn last line has no newline: start the next record on a fresh line.
        with self.path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() and (f.seek(-1, os.SEEK_END) or True) and f.read(1) != b"\n":
                with self.path.open("a") as g:
                    g.write("\n")

    def get(self, sha256: str, setting: str) -> dict | None:
        return self.records.get(record_key(sha256, setting))

    def add(self, record: dict) -> None:
        self.records[record["key"]] = record
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> DescriptionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
