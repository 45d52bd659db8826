"""Describe a dataset with one backend into the store: what is left to do, sharding, the loop, the summary.

The loop stores each answer the moment the backend returns it (lmmreg.describe.store says when it is fsync'ed),
so a kill loses only the images in flight and a re-run with the same setting picks up where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lmmreg.config import DescribeConfig
from lmmreg.data.manifest import Record
from lmmreg.describe.base import Answer, DescribeItem, Describer, iter_answers
from lmmreg.describe.parse import parse_answer
from lmmreg.describe.store import DescriptionStore, record_key
from lmmreg.errors import InputError
from lmmreg.progress import progress

log = logging.getLogger(__name__)


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise InputError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def in_shard(sha256: str, shard: tuple[int, int] | None) -> bool:
    """Shards split by image content, so identical images land in one shard and the split never depends
    on manifest order."""
    return shard is None or int(sha256[:15], 16) % shard[1] == shard[0]


def needs_retry(rec: dict, cfg: DescribeConfig) -> bool:
    """A usable record with fewer than n descriptions, under `on_too_few: retry`, with attempts left."""
    short = not rec.get("error") and len(rec["descriptions"]) < cfg.n_descriptions
    return cfg.on_too_few == "retry" and short and rec.get("attempt", 0) < cfg.too_few_retries


def plan_work(records: Sequence[Record], store: DescriptionStore, cfg: DescribeConfig, setting: str, *,
              raw_root: Path, shard: tuple[int, int] | None = None) -> list[DescribeItem]:
    """One item per distinct image still to describe: no usable record yet, or (on_too_few: retry) a
    record with too few descriptions and attempts left."""
    todo: dict[str, DescribeItem] = {}
    for r in records:
        if r.sha256 in todo or not in_shard(r.sha256, shard):
            continue
        rec = store.get(r.sha256, setting)
        attempt = 0
        if rec is not None and not rec.get("error"):
            if not needs_retry(rec, cfg):
                continue
            attempt = rec.get("attempt", 0) + 1
        todo[r.sha256] = DescribeItem(r.id, (raw_root / r.path).resolve(), r.sha256, attempt)
    return list(todo.values())


def build_record(item: DescribeItem, ans: Answer, cfg: DescribeConfig, setting: str, prev: dict | None) -> dict:
    """The store record of one answer; on a retry the answer with more descriptions is kept."""
    parsed = parse_answer(ans.raw, cfg.n_descriptions, truncated=bool(ans.truncated))
    error = ans.error or (None if parsed.descriptions else "empty answer: no descriptions found")
    rec = {"key": record_key(item.sha256, setting), "setting": setting, "sha256": item.sha256,
           "image_id": item.image_id, "backend": cfg.backend, "model": cfg.model, "raw": ans.raw,
           "descriptions": [] if error else parsed.descriptions, "n_found": parsed.n_found,
           "cut_off": parsed.cut_off, "truncated": ans.truncated, "error": error, "attempt": item.attempt,
           "prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens, "time": time.time()}
    if prev is not None and not prev.get("error") and len(prev["descriptions"]) >= len(rec["descriptions"]):
        rec = {**prev, "attempt": item.attempt, "time": rec["time"]}  # the earlier answer was at least as good
    return rec


def describe_images(describer: Describer, items: list[DescribeItem], *, store: DescriptionStore,
                    cfg: DescribeConfig, setting: str, desc: str = "describe") -> dict:
    """Run the backend over `items`, storing each answer as it arrives; returns this run's counts. The progress line
    shows images/s, and for a backend that sends requests (openai: `request_counts`) requests/s; `retries` counts
    every request that repeated a failed one and every image asked again for too few descriptions."""
    stats = Counter()
    t0 = time.perf_counter()
    bar = progress(total=len(items), unit="img", desc=desc, dynamic_ncols=True)
    counts = getattr(describer, "request_counts", None)
    sent0, retried0 = (counts["requests"], counts["retries"]) if counts else (0, 0)

    def postfix() -> dict:
        retried = stats["retries"] + (counts["retries"] - retried0 if counts else 0)
        post = {"retries": retried, "errors": stats["errors"]}
        if counts:
            sent = counts["requests"] - sent0
            post = {"requests": f"{sent} ({sent / max(time.perf_counter() - t0, 1e-9):.1f}/s)", **post}
        return post

    pending = items
    while pending:
        retry: list[DescribeItem] = []
        for item, ans in iter_answers(describer, pending):
            rec = build_record(item, ans, cfg, setting, store.get(item.sha256, setting))
            store.add(rec)
            stats["answers"] += 1
            stats["errors"] += bool(rec["error"])
            stats["prompt_tokens"] += ans.prompt_tokens or 0
            stats["completion_tokens"] += ans.completion_tokens or 0
            if needs_retry(rec, cfg):  # rec["attempt"] is this item's attempt
                retry.append(dataclasses.replace(item, attempt=item.attempt + 1))
            else:
                bar.update(1)
            bar.set_postfix(postfix(), refresh=False)
        stats["retries"] += len(retry)
        pending = retry
    bar.set_postfix(postfix(), refresh=False)
    bar.close()
    seconds = time.perf_counter() - t0
    if counts:
        stats["requests"], stats["request_retries"] = counts["requests"] - sent0, counts["retries"] - retried0
    return {**stats, "images": len(items), "seconds": round(seconds, 3),
            "images_per_s": round(len(items) / seconds, 3) if seconds > 0 else None}


def collect_descriptions(records: Sequence[Record], store: DescriptionStore, cfg: DescribeConfig,
                         setting: str) -> tuple[list[dict], list[str], dict]:
    """The current setting's descriptions in manifest order, the problems, and totals for the summary."""
    rows, problems = [], []
    hist, totals = Counter(), Counter()
    for r in records:
        rec = store.get(r.sha256, setting)
        if rec is None or rec.get("error"):
            problems.append(f"{r.id}: {rec['error'] if rec else 'not described'}")
            continue
        n = len(rec["descriptions"])
        hist[n] += 1
        totals["prompt_tokens"] += rec.get("prompt_tokens") or 0
        totals["completion_tokens"] += rec.get("completion_tokens") or 0
        totals["too_few"] += n < cfg.n_descriptions
        totals["cut_off"] += rec.get("cut_off") is not None
        if n < cfg.n_descriptions and cfg.on_too_few == "fail":
            problems.append(f"{r.id}: {n} descriptions < {cfg.n_descriptions} (describe.on_too_few: fail)")
            continue
        rows.append({"id": r.id, "sha256": r.sha256, "label": r.label, "split": r.split,
                     "descriptions": rec["descriptions"]})
    totals["descriptions_per_image"] = dict(sorted(hist.items()))
    return rows, problems, dict(totals)
