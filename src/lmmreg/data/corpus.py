"""The demo CLIP's pretraining corpus: images of the demo world paired with alt-text-like captions.

What web alt-text is to OpenAI's CLIP, this corpus is to the demo's: scenes drawn by the demo's own
rendering code (:mod:`lmmreg.data.demo`) with every attribute sampled from the whole vocabulary (not the
demo classes' prototypes), each with captions written from what was drawn. Captions name the obvious
(shape, colour, background, count, size) through varied templates, synonyms and word order; they name the
seldom-named cues (layout, texture, the secondary object) only now and then; where a scene fits a scene
type (`fit` of its main attributes match one) a caption may name it, the way alt-text names the event; and
a few captions are wrong. Item i of a stream (training or held-out pairs) is drawn from
`np.random.default_rng([seed, stream, i])`, so any worker renders any item identically: the corpus is
regenerated from its params, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmmreg.data.demo import (
    HIDDEN_ATTRS,
    MAIN_ATTRS,
    SCENE_NAMES,
    WORDS,
    class_prototypes,
    random_scene,
    render_scene,
    vocab,
)

# Alt-text templates: which attributes they name and in which order.
TEMPLATES = (
    "{count} {size} {color} {shape}s on {bg}",
    "{color} {shape}s over {bg}",
    "a photo of {count} {color} {shape}s",
    "{bg} with {count} {shape}s",
    "{shape}s, {color}, {bg}",
    "picture of {color} {shape}s",
    "{count} {shape}s in front of {bg}",
    "{size} {color} {shape}s",
    "{bg}, {color} {shape}s",
    "an image of {count} {size} {shape}s on {bg}",
    "{color} shapes on {bg}",
    "{count} {color} {shape}s",
)
SCENE_TEMPLATES = ("{text} at the {scene}", "{scene}: {text}", "the {scene}, {text}", "{text}, {scene} photo")


@dataclass(frozen=True)
class CaptionSpec:
    """How captions are written (all from params: `pretrain:`)."""

    fit: int = 3  # a scene type is named only where at least `fit` main attributes match its prototype
    scene_prob: float = 0.8  # chance that a fitting image's caption names the scene type
    hidden_prob: float = 0.1  # chance that a caption also names one seldom-named cue
    noise: float = 0.05  # chance that a caption names one wrong main attribute


def fitting_scene(scene: dict, protos: list[dict], fit: int) -> str | None:
    """The scene type whose prototype matches most main attributes, if it matches at least `fit` (ties: none)."""
    matches = [sum(scene[a] == p[a] for a in MAIN_ATTRS) for p in protos]
    best = max(matches)
    if best < fit or matches.count(best) > 1:
        return None
    return protos[matches.index(best)]["name"]


def write_caption(scene: dict, rng: np.random.Generator, spec: CaptionSpec, protos: list[dict]) -> str:
    """One alt-text caption of `scene`."""
    v = vocab()
    shown = dict(scene)
    if rng.random() < spec.noise:  # a wrong caption, as on the web
        attr = MAIN_ATTRS[int(rng.integers(0, len(MAIN_ATTRS)))]
        shown[attr] = v[attr][int(rng.integers(0, len(v[attr])))]

    def pick(xs):
        return xs[int(rng.integers(0, len(xs)))]

    words = {"shape": pick(WORDS[shown["shape"]]), "color": shown["color"], "bg": pick(WORDS[shown["background"]]),
             "count": pick(WORDS[shown["count"]]), "size": shown["size"]}
    text = pick(TEMPLATES).format(**words)
    if rng.random() < spec.hidden_prob:
        attr = HIDDEN_ATTRS[int(rng.integers(0, len(HIDDEN_ATTRS)))]
        cue = pick(WORDS[f"{attr}:{scene[attr]}"])
        text = f"{text}, {cue}" if cue else text
    name = fitting_scene(scene, protos, spec.fit)
    if name is not None and rng.random() < spec.scene_prob:
        text = pick(SCENE_TEMPLATES).format(text=text, scene=name)
    return text


TRAIN, HELDOUT = 0, 1  # the corpus' two streams: training pairs and held-out evaluation pairs


def corpus_item(i: int, *, seed: int, stream: int, image_size: int, n_captions: int, spec: CaptionSpec,
                protos: list[dict]) -> tuple[np.ndarray, list[str], dict]:
    """Item i of a corpus stream: ([H, W, 3] uint8 image, its captions, the scene drawn)."""
    rng = np.random.default_rng([seed, stream, i])
    scene = random_scene(rng)
    img = np.array(render_scene(scene, image_size, rng), dtype=np.uint8)
    return img, [write_caption(scene, rng, spec, protos) for _ in range(n_captions)], scene


def world_prototypes(demo_seed: int) -> list[dict]:
    """Every scene type of the world (not only the demo's classes): the corpus knows them all."""
    return class_prototypes(len(SCENE_NAMES), demo_seed)
