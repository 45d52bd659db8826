"""Stage `describe@<dataset>`: LMM descriptions of every image (train and test), resumable.

    python -m lmmreg.stages.describe --dataset demo --raw data/raw/demo --manifest data/prepared/demo \
        --store data/descriptions/demo/store.jsonl --out data/descriptions/demo/descriptions.jsonl

The store (append-only, DVC `persist: true`) keeps every answer ever produced, keyed by image sha256 and
the setting hash; `--out` is the current setting's view of it, in manifest order, which later stages read.
Killed? Run it again. On several GPUs or nodes: `--shard i/n --store shard-i.jsonl` each, then the plain
command with `--merge shard-*.jsonl` (checks nothing is missing or duplicated). See docs/describe.md.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.manifest import load_manifest, resolve_image_root
from lmmreg.describe.backends import build_describer
from lmmreg.describe.runner import collect_descriptions, describe_images, parse_shard, plan_work
from lmmreg.describe.setting import setting_hash
from lmmreg.describe.store import DescriptionStore, merge_stores
from lmmreg.errors import InputError

log = logging.getLogger(__name__)


def main(params: Params, *, dataset: str, raw: Path, manifest: Path, store: Path, out: Path | None,
         shard: str | None = None, merge: list[Path] | None = None) -> dict:
    cfg = params.describe
    records, _ = load_manifest(manifest)
    raw = resolve_image_root(manifest, raw)
    setting = setting_hash(cfg)
    part = parse_shard(shard) if shard else None
    with DescriptionStore(store) as st:
        if merge:
            merge_stores(st, merge, setting=setting, wanted={r.sha256: r.id for r in records})
        todo = plan_work(records, st, cfg, setting, raw_root=raw, shard=part)
        log.info("%s%s: %d images, %d to describe with setting %s (%s %s)", dataset,
                 f" shard {shard}" if shard else "", len(records), len(todo), setting, cfg.backend, cfg.model)
        run = {}
        if todo:
            describer = build_describer(cfg, raw_root=raw)
            run = describe_images(describer, todo, store=st, cfg=cfg, setting=setting,
                                  desc=f"describe {dataset}" + (f" {shard}" if shard else ""))
        if part is not None:
            # A shard's view is partial by design: the full output is written after the merge.
            log.info("%s shard %s done: %s", dataset, shard, run)
            return {"dataset": dataset, "shard": shard, "setting": setting, "run": run}
        rows, problems, totals = collect_descriptions(records, st, cfg, setting)

    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {"dataset": dataset, "setting": setting, "backend": cfg.backend, "model": cfg.model,
               "images": len(records), "described": len(rows), "errors": len(problems), **totals, "run": run}
    out.with_name("summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("%s: %d/%d images described, descriptions per image %s, %d too few, %d errors, tokens %d+%d",
             dataset, len(rows), len(records), totals["descriptions_per_image"], totals.get("too_few", 0),
             len(problems), totals.get("prompt_tokens", 0), totals.get("completion_tokens", 0))
    if problems:
        raise InputError(f"{dataset}: {len(problems)} image(s) without usable descriptions (stored answers kept "
                         f"in {store}; re-run to retry):\n  " + "\n  ".join(problems[:20]))
    return summary


def cli() -> None:
    parser = stage_parser(__doc__)
    for name in ("raw", "manifest", "store"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="descriptions.jsonl (required unless --shard)")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--shard", help="i/n: describe only shard i of n into --store, write no --out")
    parser.add_argument("--merge", type=Path, nargs="+", help="shard stores to merge into --store first")

    def run(a, p) -> None:
        if a.out is None and a.shard is None:
            parser.error("--out is required unless --shard is given")
        main(p, dataset=a.dataset, raw=a.raw, manifest=a.manifest, store=a.store, out=a.out, shard=a.shard,
             merge=a.merge)

    run_stage(run, parser)


if __name__ == "__main__":
    cli()
