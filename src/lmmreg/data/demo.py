"""The embedded demo dataset: small synthetic scenes drawn deterministically from a seed.

Each class is a *scene type* with a preferred shape, colour, background and object count. An image
keeps each preferred attribute with probability 0.75 and otherwise draws it from the whole vocabulary,
so classes share attributes (two classes may both be "red", or both be "on grass") and overlap. The
scene of every image is written to `scenes.json` so the scripted describer can talk about what was
drawn, the way an LMM talks about what it sees. Layout: `<root>/<split>/<class>/<split>_<nnnnn>.png`,
i.e. the `imagefolder` layout.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lmmreg.config import DemoConfig

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")
COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
    "purple": (140, 60, 180), "orange": (245, 140, 30), "white": (240, 240, 240), "black": (25, 25, 25),
}
BACKGROUNDS = {
    "sky": ((120, 180, 240), (200, 230, 255)), "grass": ((60, 140, 50), (120, 190, 90)),
    "sand": ((210, 180, 120), (240, 220, 170)), "night": ((10, 10, 40), (40, 40, 90)),
    "brick": ((150, 60, 40), (190, 100, 70)), "snow": ((225, 230, 240), (250, 250, 255)),
}
# Names of the scene types, in label order; the attribute triples below define them.
SCENE_NAMES = (
    "balloon festival", "meadow picnic", "beach day", "night market", "city wall",
    "ski slope", "kite show", "garden party", "desert caravan", "starry camp",
    "harbor signals", "winter fair",
)
KEEP_PROB = 0.75


def class_prototypes(n_classes: int, seed: int) -> list[dict]:
    """One (shape, colour, background, count) prototype per class; neighbours share attributes."""
    if n_classes > len(SCENE_NAMES):
        raise ValueError(f"demo.n_classes: at most {len(SCENE_NAMES)} scene types, got {n_classes}")
    rng = np.random.default_rng(seed)
    shapes, colors, bgs = list(SHAPES), list(COLORS), list(BACKGROUNDS)
    protos = []
    for k in range(n_classes):
        # Walk the attribute lists with different strides so that pairs of classes share one attribute.
        protos.append({
            "name": SCENE_NAMES[k],
            "shape": shapes[(k * 1) % len(shapes)],
            "color": colors[(k * 3 + int(rng.integers(0, 2))) % len(colors)],
            "background": bgs[(k // 2 + k % 2 * 3) % len(bgs)],
            "count": int(1 + k % 3),
        })
    return protos


def sample_scene(proto: dict, rng: np.random.Generator) -> dict:
    def keep(value, pool):
        return value if rng.random() < KEEP_PROB else pool[int(rng.integers(0, len(pool)))]

    return {
        "shape": keep(proto["shape"], SHAPES),
        "color": keep(proto["color"], list(COLORS)),
        "background": keep(proto["background"], list(BACKGROUNDS)),
        "count": int(keep(proto["count"], (1, 2, 3))),
        "size": ["small", "large"][int(rng.random() < 0.5)],
    }


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.45
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    raise ValueError(shape)


def render_scene(scene: dict, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one scene: a vertical gradient background, `count` jittered shapes, a little blur and noise."""
    lo, hi = (np.array(c, dtype=np.float64) for c in BACKGROUNDS[scene["background"]])
    t = np.linspace(0, 1, size)[:, None, None]
    bg = lo + (hi - lo) * t + rng.normal(0, 6, (size, 1, 3))  # [H, 1, 3]
    img = Image.fromarray(np.clip(np.broadcast_to(bg, (size, size, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    base = np.array(COLORS[scene["color"]], dtype=np.float64)
    r = size * (0.18 if scene["size"] == "large" else 0.11)
    for _ in range(scene["count"]):
        cx, cy = rng.uniform(r, size - r, 2)
        rr = r * rng.uniform(0.8, 1.2)
        fill = tuple(int(v) for v in np.clip(base + rng.normal(0, 18, 3), 0, 255))
        box = (cx - rr, cy - rr, cx + rr, cy + rr)
        if scene["shape"] == "circle":
            draw.ellipse(box, fill=fill)
        elif scene["shape"] == "square":
            draw.rectangle(box, fill=fill)
        elif scene["shape"] == "ring":
            draw.ellipse(box, outline=fill, width=max(2, int(rr * 0.35)))
        elif scene["shape"] == "cross":
            w = rr * 0.35
            draw.rectangle((cx - rr, cy - w, cx + rr, cy + w), fill=fill)
            draw.rectangle((cx - w, cy - rr, cx + w, cy + rr), fill=fill)
        else:
            draw.polygon(_polygon(scene["shape"], cx, cy, rr), fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate_demo(cfg: DemoConfig, out_dir: str | Path) -> dict:
    """Write the demo dataset under `out_dir`; returns a summary. Same config, same bytes."""
    out = Path(out_dir)
    protos = class_prototypes(cfg.n_classes, cfg.seed)
    scenes: dict[str, dict] = {}
    rng = np.random.default_rng(cfg.seed + 1)
    counter = 0
    for split, per_class in (("train", cfg.train_per_class), ("test", cfg.test_per_class)):
        for proto in protos:
            class_dir = out / split / proto["name"]
            class_dir.mkdir(parents=True, exist_ok=True)
            for _ in range(per_class):
                scene = sample_scene(proto, rng)
                rel = f"{split}/{proto['name']}/{split}_{counter:05d}.png"
                render_scene(scene, cfg.image_size, rng).save(out / rel, optimize=False)
                scenes[rel] = scene
                counter += 1
    (out / "scenes.json").write_text(json.dumps(scenes, indent=0, sort_keys=True) + "\n")
    (out / "classes.json").write_text(json.dumps(protos, indent=1) + "\n")
    log.info("demo dataset: %d images, %d classes -> %s", counter, len(protos), out)
    return {"images": counter, "classes": len(protos)}
