"""Append-only JSONL store of LMM answers, keyed by image sha256 + setting hash.

Every record is flushed as it is written, so a killed run (Ctrl-C, OOM, a lost job) loses at most the images in
flight. It is fsync'ed with the first record written a second or more after the last fsync, and on close, so a
machine that goes down also loses the records since the last fsync (a real LMM's last answer or batch, under a
second of the scripted describer's), which a re-run asks for again. A torn last line from a kill is ignored on
reload. Re-running a setting skips what is stored;
a new setting adds records and keeps the old ones. One writer at a time: the store takes an exclusive
lock, so two processes pointed at the same file fail fast instead of interleaving lines. Shards write
their own stores; :func:`merge_stores` combines them and checks nothing is missing or duplicated.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from lmmreg.errors import InputError

log = logging.getLogger(__name__)


# Seconds between fsyncs of the store while records keep coming. An fsync per record cost 2.3 s of describing the
# demo's 7,600 images with the scripted describer (about 7.7 s in all) on this project's 2-core machine; a real
# LMM takes longer than this per answer, so each of its records is still fsync'ed as it is written.
SYNC_EVERY_S = 1.0


class StoreLockedError(InputError):
    """Another process holds the store's write lock."""


def record_key(sha256: str, setting: str) -> str:
    return f"{sha256}:{setting}"


class DescriptionStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        self._synced = float("-inf")  # the first record is fsync'ed at once
        self._fh = self.path.open("a", encoding="utf-8")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise StoreLockedError(f"{self.path}: another process is writing to this store (run shards with "
                               "their own --store and merge them)") from None
        self._load()

    def _load(self) -> None:
        try:
            # A later record for the same key wins (e.g. a retry after an error).
            self.records = {rec["key"]: rec for rec in load_store_records(self.path)}
        except ValueError:
            self._fh.close()
            raise
        # A torn last line has no newline: start the next record on a fresh line.
        with self.path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() and (f.seek(-1, os.SEEK_END) or True) and f.read(1) != b"\n":
                self._fh.write("\n")
                self._fh.flush()

    def get(self, sha256: str, setting: str) -> dict | None:
        return self.records.get(record_key(sha256, setting))

    def add(self, record: dict) -> None:
        self.records[record["key"]] = record
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()  # in the OS's hands: a killed process loses nothing written
        now = time.monotonic()
        if now - self._synced >= SYNC_EVERY_S:
            self.sync(now)

    def sync(self, now: float | None = None) -> None:
        """Make what is written durable (fsync)."""
        os.fsync(self._fh.fileno())
        self._synced = time.monotonic() if now is None else now

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self.sync()
            finally:
                self._fh.close()

    def __enter__(self) -> DescriptionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_store_records(path: str | Path) -> list[dict]:
    """Every readable record of a store file in file order (torn lines skipped), without locking it."""
    out = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                # A kill mid-write leaves at most one torn line; anything else is worth a warning too.
                log.warning("%s:%d: unreadable record skipped (torn write?)", path, lineno)
                continue
            if not isinstance(rec, dict) or "key" not in rec:
                raise InputError(f"{path}:{lineno}: not a store record (no 'key')")
            out.append(rec)
    return out


def merge_stores(store: DescriptionStore, shards: Iterable[str | Path], *, setting: str,
                 wanted: dict[str, str]) -> dict:
    """Append the shard stores' records to `store`; check the current `setting` is complete.

    `wanted` maps sha256 -> an image id of every manifest image. Fails (ValueError naming the images
    and files) when an image of this setting was answered in two shards, or has no usable answer in
    the shards nor in `store`. Records of other settings are carried over unchecked. Idempotent:
    records already in `store` are not written again.
    """
    owner: dict[str, Path] = {}  # key of this setting -> the shard that answered it
    dups: list[str] = []
    added = 0
    for shard in map(Path, shards):
        last: dict[str, dict] = {}
        for rec in load_store_records(shard):
            last[rec["key"]] = rec  # within one shard a later record (a retry) wins
        for key, rec in last.items():
            if rec.get("setting") == setting and not rec.get("error"):
                if key in owner:
                    dups.append(f"{wanted.get(rec.get('sha256'), key)}: in {owner[key]} and {shard}")
                    continue
                owner[key] = shard
            if store.records.get(key) != rec and not (rec.get("error") and key in store.records):
                store.add(rec)
                added += 1
    if dups:
        raise InputError(f"merge: {len(dups)} image(s) described in more than one shard:\n  " + "\n  ".join(dups[:20]))
    missing = [f"{image_id} ({sha})" for sha, image_id in wanted.items()
               if (r := store.get(sha, setting)) is None or r.get("error")]
    if missing:
        raise InputError(f"merge: {len(missing)} image(s) have no answer for setting {setting} in the shards or "
                         f"{store.path}:\n  " + "\n  ".join(missing[:20]))
    log.info("merge: %d record(s) added to %s; all %d images described", added, store.path, len(wanted))
    return {"added": added, "images": len(wanted), "shards_answered": len(owner)}
