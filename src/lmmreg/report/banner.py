"""The report's opening banner: what the demo is, keyed on the model actually used, and what it can say."""

from __future__ import annotations

from lmmreg.config import Params


def is_demo(params: Params) -> bool:
    return any(params.source(ds).layout == "demo" for ds in params.datasets) or not params.clip.pretrained \
        or params.describe.backend == "scripted"


def demo_banner(params: Params, pretrain: dict | None = None) -> str:
    """What the demo is, keyed on the model actually used (not on the dataset layout), and what it can say."""
    if not params.clip.pretrained:
        model = "a randomly initialised tiny CLIP (its text centroids carry no image semantics)"
    elif pretrain and pretrain.get("enabled"):
        cfg = params.pretrain
        zs = pretrain.get("trained", {})
        model = (f"a tiny CLIP ({params.clip.model}) pretrained for {pretrain.get('train_minutes', '?')} min on "
                 f"{cfg.n_images * cfg.captions_per_image:,} generated image-caption pairs of its own world "
                 f"(stage pretrain_clip; zero-shot on the demo test split {zs.get('zs_demo_test', '?')}% at "
                 f"{zs.get('zs_demo_chance', '?')}% chance)")
    else:
        model = f"CLIP {params.clip.model} with weights {params.clip.pretrained}"
    return (
        "> **DEMO RUN: these are not the paper's numbers.** They come from the embedded offline demo: a synthetic\n"
        f"> world, a scripted describer and {model}. They can say how the methods compare on a CLIP that knows\n"
        "> its world, in miniature; they cannot say how large any effect is on UCF-101, ERA or BAR with ViT-L/14\n"
        "> and a real LMM. The paper's numbers are printed beside them for reference only.\n"
    )
