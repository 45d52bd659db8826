"""Stage `embed_text@<dataset>`: CLIP text embeddings of every description (frozen text encoder),
each image's mean description embedding, and the class-name prompt embeddings (zero-shot).

    python -m lmmreg.stages.embed_text --manifest data/prepared/demo \
        --descriptions data/descriptions/demo/descriptions.jsonl --out data/text/demo

Writes `descriptions.pt` (one row per description, id `<image id>#<j>`), `image_mean.pt` (one row per
image), `class_text.pt` (one row per class) and `random_text.pt` (a random-word stand-in for each training
description: the `random_text` control of lmmreg.reg_targets), all artifacts aligned by id. Texts are encoded sorted by
length and padded only to the longest of each batch (exact for CLIP, see `lmmreg.clip.text.embed_texts`);
descriptions longer than CLIP's 77 tokens are cut as open_clip cuts them, counted in the log and in the
artifact meta (`n_truncated`) and flagged per row (`truncated`). Device, batch size and precision are flags.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from lmmreg.artifacts import Artifact, save_artifact
from lmmreg.cli import add_compute_args, batch_size, run_stage, stage_parser
from lmmreg.clip.build import build_clip, clip_meta
from lmmreg.clip.text import embed_texts
from lmmreg.config import Params, stable_hash
from lmmreg.data.manifest import load_manifest
from lmmreg.describe.setting import setting_hash
from lmmreg.errors import InputError
from lmmreg.random_text import random_words, word_vocabulary

log = logging.getLogger(__name__)
RANDOM_TEXT_SEED = 0


def main(params: Params, *, manifest: Path, descriptions: Path, out: Path, device: str = "cpu",
         batch_size: int = 256, precision: str = "auto", workers: int = 0) -> None:
    model, _, tokenizer = build_clip(params.clip, device=device)  # first: missing weights fail before any work
    records, classes = load_manifest(manifest)
    by_id = {}
    with descriptions.open() as f:
        for lineno, line in enumerate(f, start=1):
            rec = json.loads(line)
            if not rec.get("descriptions"):
                raise InputError(f"{descriptions}:{lineno}: image {rec.get('id')!r} has no descriptions")
            by_id[rec["id"]] = rec["descriptions"]
    missing = [r.id for r in records if r.id not in by_id]
    if missing:
        raise InputError(f"{descriptions}: no descriptions for {len(missing)} manifest images, e.g. {missing[:3]}")

    texts, owner, ids, labels = [], [], [], []
    for k, r in enumerate(records):
        for j, text in enumerate(by_id[r.id]):
            texts.append(text)
            owner.append(k)
            ids.append(f"{r.id}#{j}")
            labels.append(r.label)
    enc = embed_texts(model, tokenizer, texts, batch_size=batch_size, device=device, precision=precision,
                      workers=workers)
    emb = enc.emb  # [M, D]
    if enc.n_truncated:
        log.warning("%d of %d descriptions are longer than CLIP's %d tokens and were truncated (e.g. %r)",
                    enc.n_truncated, len(texts), tokenizer.context_length,
                    texts[int(enc.truncated.nonzero()[0])][:120])
    owner_t = torch.tensor(owner)
    meta = {**clip_meta(params.clip), "describe_setting": setting_hash(params.describe),
            "prompt_hash": stable_hash(params.describe.prompt), "precision": enc.precision,
            "padding": "longest-in-batch" if enc.trimmed else "context"}
    out.mkdir(parents=True, exist_ok=True)
    save_artifact(out / "descriptions.pt",
                  Artifact(ids, torch.tensor(labels), {"emb": emb, "owner": owner_t, "truncated": enc.truncated},
                           {**meta, "n_truncated": enc.n_truncated, "context_length": tokenizer.context_length}))

    sums = torch.zeros(len(records), emb.shape[1]).index_add_(0, owner_t, emb)
    counts = torch.bincount(owner_t, minlength=len(records))
    save_artifact(out / "image_mean.pt", Artifact([r.id for r in records], torch.tensor([r.label for r in records]),
                                                  {"mean": sums / counts[:, None], "count": counts}, meta))

    prompts = [params.clip.class_prompt.format(c) for c in classes]
    class_emb = embed_texts(model, tokenizer, prompts, batch_size=batch_size, device=device, precision=precision,
                            progress=False).emb
    save_artifact(out / "class_text.pt", Artifact(list(classes), torch.arange(len(classes)), {"emb": class_emb},
                                                  {**meta, "class_prompt": params.clip.class_prompt}))

    # The random-word control of J_reg's target (train.reg_target: random_text, lmmreg.reg_targets): each training
    # description replaced by as many words drawn at random from a fixed dictionary, embedded by the same tower.
    train = [k for k, i in enumerate(ids) if records[owner[k]].split == "train"]
    fake = random_words([len(texts[k].split()) for k in train], word_vocabulary(), seed=RANDOM_TEXT_SEED)
    fake_emb = embed_texts(model, tokenizer, fake, batch_size=batch_size, device=device, precision=precision,
                           progress=False).emb
    save_artifact(out / "random_text.pt", Artifact([ids[k] for k in train], torch.tensor([labels[k] for k in train]),
                                                   {"emb": fake_emb}, {**meta, "source": "random_words",
                                                                       "seed": RANDOM_TEXT_SEED}))
    log.info("embedded %d descriptions of %d images (%d truncated at %d tokens), %d class prompts -> %s",
             len(texts), len(records), enc.n_truncated, tokenizer.context_length, len(classes), out)


def cli() -> None:
    parser = stage_parser(__doc__)
    for name in ("manifest", "descriptions", "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    add_compute_args(parser, gpu_batch=1024, cpu_batch=256, workers=min(8, (os.cpu_count() or 1) - 1),
                     workers_help="tokenization processes")
    run_stage(lambda a, p: main(p, manifest=a.manifest, descriptions=a.descriptions, out=a.out, device=a.device,
                                batch_size=batch_size(a), precision=a.precision, workers=a.workers), parser)


if __name__ == "__main__":
    cli()
