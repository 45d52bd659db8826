"""The demo's scripted describer: writes an LMM-like numbered answer about the scene the demo drew.

Noise like a real LMM's: each description mentions a random subset of the attributes, uses synonyms,
and with probability `noise` names a wrong value of each attribute it mentions (noise 1: descriptions
unrelated to the image). Deterministic per (seed, image).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from lmmreg.config import DescribeConfig
from lmmreg.data.demo import BACKGROUNDS, COLORS, COUNTS, EXTRAS, LAYOUTS, SHAPES, TEXTURES, WORDS
from lmmreg.describe.base import Answer, DescribeItem, check_options

TEMPLATES = [
    "{count} {size} {color} {shape}s over {bg}.",
    "A picture showing {count} {color} {shape}s.",
    "{bg_cap} with {color} shapes scattered around.",
    "The scene contains {count} {shape}s against {bg}.",
    "A {size} {color} {shape} in the foreground.",
    "Bright {color} objects on {bg}.",
    "An outdoor scene with {bg} and {shape}s.",
    "Simple geometric {shape}s coloured {color}.",
    "A {color} pattern of {shape}s.",
    "The background is {bg}.",
    "Several {color} forms resembling {shape}s.",
    "A minimal illustration with {count} {shape}s.",
    # An LMM also mentions what alt-text seldom names: the arrangement, the texture, a secondary object.
    "The {shape}s are {layout}.",
    "Behind them there is {texture}.",
    "The picture also shows {extra}.",
]
# What the last three templates say when there is nothing to name.
EMPTY_CUE = {"texture": "a plain background", "extra": "nothing else"}


class ScriptedDescriber:
    needs_raw_root = True  # constructed with the dataset's raw folder (lmmreg.describe.backends)
    max_batch = 64

    def __init__(self, cfg: DescribeConfig, *, raw_root: Path):
        check_options(cfg, {"noise", "scenes"})
        self.cfg = cfg
        self.noise = float(cfg.options.get("noise", 0.15))
        scenes_path = Path(raw_root) / str(cfg.options.get("scenes", "scenes.json"))
        if not scenes_path.is_file():
            raise FileNotFoundError(f"{scenes_path}: the scripted describer needs the scenes the demo drew "
                                    "(describe.backend: scripted works on the demo dataset only)")
        self.root = Path(raw_root).resolve()
        self.scenes: dict[str, dict] = json.loads(scenes_path.read_text())

    def _rng(self, key: str) -> np.random.Generator:
        digest = hashlib.sha256(f"{self.cfg.seed}:{key}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def _one(self, scene: dict, rng: np.random.Generator) -> str:
        def maybe_wrong(value: str, pool) -> str:
            return pool[int(rng.integers(0, len(pool)))] if rng.random() < self.noise else value

        shape = maybe_wrong(scene["shape"], SHAPES)
        color = maybe_wrong(scene["color"], list(COLORS))
        bg = maybe_wrong(scene["background"], list(BACKGROUNDS))
        count = maybe_wrong(scene["count"], COUNTS)
        pick = lambda xs: xs[int(rng.integers(0, len(xs)))]  # noqa: E731
        words = {
            "shape": pick(WORDS[shape]), "color": color, "bg": pick(WORDS[bg]),
            "count": pick(WORDS[count]), "size": scene["size"],
        }
        for attr, pool in (("layout", LAYOUTS), ("texture", TEXTURES), ("extra", EXTRAS)):
            cue = pick(WORDS[f"{attr}:{maybe_wrong(scene.get(attr, pool[0]), pool)}"])
            words[attr] = cue or EMPTY_CUE[attr]
        words["bg_cap"] = words["bg"][0].upper() + words["bg"][1:]
        text = pick(TEMPLATES).format(**words)
        return text[0].upper() + text[1:]

    def describe_batch(self, items: list[DescribeItem]) -> list[Answer]:
        answers = []
        for item in items:
            rel = Path(item.path).resolve().relative_to(self.root).as_posix()
            scene = self.scenes.get(rel)
            if scene is None:
                answers.append(Answer(raw="", error=f"{rel}: no scene recorded in scenes.json"))
                continue
            rng = self._rng(item.sha256)
            lines = [f"{i + 1}. {self._one(scene, rng)}" for i in range(self.cfg.n_descriptions)]
            answers.append(Answer(raw="Here are some semantic descriptions of the image:\n" + "\n".join(lines)))
        return answers
