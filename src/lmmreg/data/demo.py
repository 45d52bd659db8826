"""The embedded demo world: small synthetic scenes drawn deterministically from a seed.

A scene has attributes that captions name readily (shape, colour, background, count, size) and cues that
alt-text rarely names (the layout of the objects, the background's texture, a secondary object), the way
web captions name the obvious and leave out the rest. Each *scene type* (a class, e.g. "kite show") has a
preferred value of every attribute; an image keeps each preferred value with probability `demo.keep_main`
(`demo.keep_hidden` for the seldom-named cues) and otherwise draws it from the whole vocabulary, so classes
overlap. The same rendering code draws the demo dataset and the pretraining corpus of the demo CLIP
(:mod:`lmmreg.data.corpus`), whose attributes are drawn from the whole vocabulary. The scene of every demo
image is written to `scenes.json` so the scripted describer can talk about what was drawn.
Layout: `<root>/<split>/<class>/<split>_<nnnnn>.png` (the imagefolder layout).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lmmreg.config import DemoConfig
from lmmreg.errors import InputError
from lmmreg.progress import progress

log = logging.getLogger(__name__)
CHUNK = 200  # images per painting task

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
COUNTS = (1, 2, 3)
SIZES = ("small", "large")
# The cues captions seldom name.
LAYOUTS = ("scattered", "row", "column", "diagonal")
TEXTURES = ("plain", "striped", "dotted", "checkered")
EXTRAS = ("none", "moon", "flag", "fence")
# The world's language: the words captions and descriptions use for each attribute value (synonyms).
# Seldom-named cues are keyed "<attribute>:<value>"; an empty word means there is nothing to name.
WORDS: dict = {
    "circle": ["circle", "round disc", "dot", "ball"], "square": ["square", "box", "block", "tile"],
    "triangle": ["triangle", "pyramid shape", "wedge"], "star": ["star", "starburst", "five-pointed star"],
    "ring": ["ring", "hoop", "donut shape"], "cross": ["cross", "plus sign", "x-shaped mark"],
    "sky": ["a blue sky", "an open sky", "the daytime sky"], "grass": ["green grass", "a lawn", "a meadow"],
    "sand": ["sand", "a sandy beach", "dunes"], "night": ["a night sky", "darkness", "a dark evening"],
    "brick": ["a brick wall", "red bricks", "masonry"], "snow": ["snow", "a snowy field", "white frost"],
    1: ["a single", "one", "a lone"], 2: ["two", "a pair of", "twin"], 3: ["three", "several", "a trio of"],
    "layout:scattered": ["scattered around", "spread out"], "layout:row": ["arranged in a row", "lined up"],
    "layout:column": ["stacked in a column", "one above the other"],
    "layout:diagonal": ["along a diagonal", "in a diagonal line"],
    "texture:plain": [""], "texture:striped": ["a striped background", "horizontal stripes"],
    "texture:dotted": ["a dotted pattern", "polka dots"],
    "texture:checkered": ["a checkered pattern", "a checkerboard"],
    "extra:none": [""], "extra:moon": ["a moon in the corner", "a pale moon"],
    "extra:flag": ["a small pink flag", "a flag on a pole"], "extra:fence": ["a wooden fence", "a fence at the bottom"],
}
# Names of the scene types, in label order; `class_prototypes` gives each its preferred attributes.
SCENE_NAMES = (
    "balloon festival", "meadow picnic", "beach day", "night market", "city wall",
    "ski slope", "kite show", "garden party", "desert caravan", "starry camp",
    "harbor signals", "winter fair",
)
# The attributes captions name readily, and the ones they seldom name (in `scene` dicts).
MAIN_ATTRS = ("shape", "color", "background", "count")
HIDDEN_ATTRS = ("layout", "texture", "extra")


def vocab() -> dict[str, tuple]:
    """Every value of every attribute, the whole world's vocabulary."""
    return {"shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS), "count": COUNTS,
            "size": SIZES, "layout": LAYOUTS, "texture": TEXTURES, "extra": EXTRAS}


def class_prototypes(n_classes: int, seed: int) -> list[dict]:
    """One prototype per scene type; neighbours share attributes (prototype k does not depend on n_classes)."""
    if n_classes > len(SCENE_NAMES):
        raise InputError(f"demo.n_classes: at most {len(SCENE_NAMES)} scene types, got {n_classes}")
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
            "layout": LAYOUTS[(k * 3) % len(LAYOUTS)],
            "texture": TEXTURES[(k // 2) % len(TEXTURES)],
            "extra": EXTRAS[(k * 5 + 1) % len(EXTRAS)],
        })
    return protos


def dataset_prototypes(n_classes: int, seed: int, shift: int) -> list[dict]:
    """The demo dataset's classes: the world's scene types with `shift` main attributes changed each (class k
    changes attributes k, k+1, ... of MAIN_ATTRS to the next value in the vocabulary), the way a dataset's
    own labelling conventions depart from what web captions associate with a class name."""
    protos = class_prototypes(n_classes, seed)
    v = vocab()
    for k, p in enumerate(protos):
        for j in range(shift):
            attr = MAIN_ATTRS[(k + j) % len(MAIN_ATTRS)]
            values = list(v[attr])
            p[attr] = values[(values.index(p[attr]) + 1) % len(values)]
    return protos


def sample_scene(proto: dict, rng: np.random.Generator, *, keep_main: float = 0.75,
                 keep_hidden: float = 0.75) -> dict:
    """A scene of type `proto`: each preferred attribute kept with probability keep_main / keep_hidden."""
    def keep(value, pool, p):
        return value if rng.random() < p else pool[int(rng.integers(0, len(pool)))]

    v = vocab()
    scene = {a: keep(proto[a], v[a], keep_main) for a in MAIN_ATTRS}
    scene["count"] = int(scene["count"])
    scene["size"] = SIZES[int(rng.random() < 0.5)]
    scene.update({a: keep(proto[a], v[a], keep_hidden) for a in HIDDEN_ATTRS})
    return scene


def random_scene(rng: np.random.Generator) -> dict:
    """A scene with every attribute drawn uniformly from the whole vocabulary (the pretraining corpus)."""
    scene = {a: vals[int(rng.integers(0, len(vals)))] for a, vals in vocab().items()}
    scene["count"] = int(scene["count"])
    return scene


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


def _centres(layout: str, count: int, size: int, r: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Object centres for a layout: evenly spaced along a line (row, column, diagonal) or anywhere (scattered)."""
    lo, hi = r, size - r
    if layout == "scattered":
        return [tuple(rng.uniform(lo, hi, 2)) for _ in range(count)]
    t = (np.arange(count) + 0.5) / count if count > 1 else np.array([rng.uniform(0.3, 0.7)])
    t = lo + (hi - lo) * t + rng.normal(0, size * 0.02, count)
    c = rng.uniform(lo + (hi - lo) * 0.3, lo + (hi - lo) * 0.7)  # where the line lies
    if layout == "row":
        return [(float(x), float(c)) for x in t]
    if layout == "column":
        return [(float(c), float(y)) for y in t]
    return [(float(x), float(x)) for x in t]  # diagonal, top-left to bottom-right


@functools.cache
def _texture_mask(texture: str, size: int) -> np.ndarray:
    """[size, size] bool: where a texture's pattern lies."""
    yy, xx = np.mgrid[0:size, 0:size]
    step = max(4, size // 8)
    if texture == "striped":
        mask = (yy // (step // 2)) % 2 == 0
    elif texture == "dotted":
        mask = ((yy % step - step / 2) ** 2 + (xx % step - step / 2) ** 2) < (step / 4) ** 2
    else:  # checkered
        mask = ((yy // step) + (xx // step)) % 2 == 0
    mask.setflags(write=False)
    return mask


def _texture(img: Image.Image, texture: str, size: int) -> None:
    """A faint pattern over the background: stripes, dots or a checkerboard (`plain` draws nothing): 28 levels
    lighter on a dark background (mean below 128), darker on a light one, clipped to 0..255. In integers: the
    pixels are whole numbers, so this is exactly the float arithmetic it replaces."""
    if texture == "plain":
        return
    arr = np.asarray(img).astype(np.int16)
    shade = 28 if int(arr.sum()) < 128 * arr.size else -28
    arr[_texture_mask(texture, size)] += shade
    img.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))


def _extra_draws(extra: str, size: int, rng: np.random.Generator) -> tuple[float, ...]:
    """Where the secondary object goes (its random numbers, drawn in `_extra`'s order)."""
    s = size / 64
    if extra == "moon":
        x = rng.uniform(6, 14) * s if rng.random() < 0.5 else size - rng.uniform(6, 14) * s
        return x, rng.uniform(6, 12) * s
    if extra == "flag":
        return (rng.uniform(8, size - 16 * s),)
    if extra == "fence":
        return (size - rng.uniform(6, 10) * s,)
    return ()


def _extra(draw: ImageDraw.ImageDraw, extra: str, size: int, at: tuple[float, ...]) -> None:
    """The secondary object: a moon in a top corner, a flag on a pole, a fence along the bottom."""
    s = size / 64
    if extra == "moon":
        x, y = at
        draw.ellipse((x - 5 * s, y - 5 * s, x + 5 * s, y + 5 * s), fill=(245, 240, 200))
    elif extra == "flag":
        (x,) = at
        draw.rectangle((x, 6 * s, x + 1.5 * s, 26 * s), fill=(90, 70, 50))
        draw.polygon([(x + 1.5 * s, 6 * s), (x + 12 * s, 10 * s), (x + 1.5 * s, 14 * s)], fill=(230, 30, 120))
    elif extra == "fence":
        (y,) = at
        draw.rectangle((0, y, size, y + 1.5 * s), fill=(120, 90, 60))
        for x in np.arange(2 * s, size, 7 * s):
            draw.rectangle((x, y - 5 * s, x + 1.5 * s, y + 5 * s), fill=(120, 90, 60))


def scene_draws(scene: dict, size: int, rng: np.random.Generator) -> dict:
    """Every random number drawing `scene` takes, in the order `render_scene` has always drawn them: background
    noise, the secondary object's place, the object centres, each object's radius and colour jitter, pixel noise.
    `paint(scene, size, scene_draws(scene, size, rng))` is `render_scene(scene, size, rng)`; drawing them apart
    lets the demo dataset keep one sequential random stream and paint its images in parallel."""
    r = size * (0.18 if scene["size"] == "large" else 0.11)
    draws = {"bg_noise": rng.normal(0, 6, (size, 1, 3)), "extra": _extra_draws(scene.get("extra", "none"), size, rng)}
    centres = _centres(scene.get("layout", "scattered"), scene["count"], size, r, rng)
    draws["objects"] = [(cx, cy, r * rng.uniform(0.8, 1.2), rng.normal(0, 18, 3)) for cx, cy in centres]
    draws["noise"] = rng.normal(0, 8, (size, size, 3))
    return draws


def paint(scene: dict, size: int, draws: dict) -> Image.Image:
    """Draw one scene from its random numbers (`scene_draws`): gradient background with its texture, the
    secondary object, `count` shapes in their layout, a little blur and noise. Scenes without the seldom-named
    cues draw as plain scattered shapes."""
    lo, hi = (np.array(c, dtype=np.float64) for c in BACKGROUNDS[scene["background"]])
    t = np.linspace(0, 1, size)[:, None, None]
    bg = lo + (hi - lo) * t + draws["bg_noise"]  # [H, 1, 3]
    img = Image.fromarray(np.clip(np.broadcast_to(bg, (size, size, 3)), 0, 255).astype(np.uint8))
    _texture(img, scene.get("texture", "plain"), size)
    draw = ImageDraw.Draw(img)
    _extra(draw, scene.get("extra", "none"), size, draws["extra"])
    base = np.array(COLORS[scene["color"]], dtype=np.float64)
    for cx, cy, rr, jitter in draws["objects"]:
        fill = tuple(int(v) for v in np.clip(base + jitter, 0, 255))
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
    arr = draws["noise"] + np.asarray(img)  # float64 + uint8 -> float64, as blurred image + noise always was
    return Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8))


def render_scene(scene: dict, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one scene with random numbers from `rng` (see `paint`)."""
    return paint(scene, size, scene_draws(scene, size, rng))


def _paint_files(out: Path, size: int, items: list[tuple[str, dict, dict]]) -> None:
    for rel, scene, draws in items:
        paint(scene, size, draws).save(out / rel, optimize=False)


def generate_demo(cfg: DemoConfig, out_dir: str | Path, *, workers: int = 1) -> dict:
    """Write the demo dataset under `out_dir`; returns a summary. Same config, same bytes, with any `workers`.

    One random stream draws every scene and its random numbers in order (cheap); `workers` processes paint and
    save the images from those numbers, CHUNK at a time."""
    out = Path(out_dir)
    protos = dataset_prototypes(cfg.n_classes, cfg.seed, cfg.shift)
    scenes: dict[str, dict] = {}
    rng = np.random.default_rng(cfg.seed + 1)
    counter = 0
    total = len(protos) * (cfg.train_per_class + cfg.test_per_class)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    pending: list[tuple[Future, int]] = []  # chunks being painted, with their sizes
    chunk: list[tuple[str, dict, dict]] = []
    bar = progress(total=total, desc="render demo", unit="img")

    def settle(backlog: int) -> None:
        """Wait for the oldest chunks until at most `backlog` are being painted (each holds its noise arrays)."""
        while len(pending) > backlog:
            done, n = pending.pop(0)
            done.result()
            bar.update(n)

    def flush() -> None:
        if pool is None:
            _paint_files(out, cfg.image_size, chunk)
            bar.update(len(chunk))
        else:
            pending.append((pool.submit(_paint_files, out, cfg.image_size, list(chunk)), len(chunk)))
            settle(2 * workers)
        chunk.clear()

    try:
        for split, per_class in (("train", cfg.train_per_class), ("test", cfg.test_per_class)):
            for proto in protos:
                class_dir = out / split / proto["name"]
                class_dir.mkdir(parents=True, exist_ok=True)
                for _ in range(per_class):
                    scene = sample_scene(proto, rng, keep_main=cfg.keep_main, keep_hidden=cfg.keep_hidden)
                    rel = f"{split}/{proto['name']}/{split}_{counter:05d}.png"
                    chunk.append((rel, scene, scene_draws(scene, cfg.image_size, rng)))
                    scenes[rel] = scene
                    counter += 1
                    if len(chunk) == CHUNK:
                        flush()
        if chunk:
            flush()
        settle(0)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    (out / "scenes.json").write_text(json.dumps(scenes, indent=0, sort_keys=True) + "\n")
    (out / "classes.json").write_text(json.dumps(protos, indent=1) + "\n")
    log.info("demo dataset: %d images, %d classes -> %s", counter, len(protos), out)
    return {"images": counter, "classes": len(protos)}
