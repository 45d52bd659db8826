"""Stage `describe@<dataset>`: LMM descriptions of every image (train and test), resumable.

    python -m lmmreg.stages.describe --dataset demo --raw data/raw/demo --manifest data/prepared/demo \
        --store data/descriptions/demo/store.jsonl --out data/descriptions/demo/descriptions.jsonl

The store (append-only, DVC `persist: true`) keeps every answer ever produced, keyed by image sha256 and
the setting hash; `--out` is the current setting's view of it, in manifest order, which later stages read.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from lmmreg.cli import run_stage, stage_parser
from lmmreg.config import Params
from lmmreg.data.manifest import load_manifest, resolve_image_root
from lmmreg.describe import DescribeItem, build_describer, setting_hash
from lmmreg.describe.parse import parse_descriptions
from lmmreg.describe.store import DescriptionStore, record_key

log = logging.getLogger(__name__)


def main(params: Params, *, dataset: str, raw: Path, manifest: Path, store: Path, out: Path) -> dict:
    cfg = params.describe
    records, _ = load_manifest(manifest)
    raw = resolve_image_root(manifest, raw)
    setting = setting_hash(cfg)
    st = DescriptionStore(store)
    todo = [r for r in records if st.get(r.sha256, setting) is None or st.get(r.sha256, setting).get("error")]
    log.info("%s: %d images, %d already described with setting %s, %d to do", dataset, len(records),
             len(records) - len(todo), setting, len(todo))
    if todo:
        describer = build_describer(cfg, raw_root=raw)
        bar = tqdm(total=len(todo), unit="img", desc=f"describe {dataset}")
        for i in range(0, len(todo), describer.max_batch):
            batch = todo[i:i + describer.max_batch]
            items = [DescribeItem(r.id, (raw / r.path).resolve(), r.sha256) for r in batch]
            for r, ans in zip(batch, describer.describe_batch(items), strict=True):
                descs = parse_descriptions(ans.raw, cfg.n_descriptions) if not ans.error else []
                error = ans.error or (None if descs else "empty answer: no descriptions found")
                st.add({"key": record_key(r.sha256, setting), "setting": setting, "sha256": r.sha256,
                        "image_id": r.id, "backend": cfg.backend, "model": cfg.model, "raw": ans.raw,
                        "descriptions": descs, "n_found": len(descs), "error": error, "time": time.time()})
            bar.update(len(batch))
        bar.close()
    st.close()

    st = DescriptionStore(store)
    errors, hist = [], Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for r in records:
            rec = st.get(r.sha256, setting)
            if rec is None or rec.get("error"):
                errors.append(f"{r.id}: {rec['error'] if rec else 'not described'}")
                continue
            if len(rec["descriptions"]) < cfg.n_descriptions and cfg.on_too_few == "fail":
                errors.append(f"{r.id}: {len(rec['descriptions'])} descriptions < {cfg.n_descriptions}")
                continue
            hist[len(rec["descriptions"])] += 1
            f.write(json.dumps({"id": r.id, "sha256": r.sha256, "label": r.label, "split": r.split,
                                "descriptions": rec["descriptions"]}) + "\n")
    st.close()
    summary = {"dataset": dataset, "setting": setting, "images": len(records), "errors": len(errors),
               "descriptions_per_image": dict(sorted(hist.items()))}
    out.with_name("summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    if errors:
        raise ValueError(f"{dataset}: {len(errors)} image(s) without usable descriptions (stored answers kept "
                         f"in {store}; re-run to retry):\n  " + "\n  ".join(errors[:20]))
    log.info("%s: descriptions per image %s", dataset, dict(hist))
    return summary


def cli() -> None:
    parser = stage_parser(__doc__)
    for name in ("raw", "manifest", "store", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    run_stage(lambda a, p: main(p, dataset=a.dataset, raw=a.raw, manifest=a.manifest, store=a.store,
                                out=a.out), parser)


if __name__ == "__main__":
    cli()
