"""The demo world's renderer: the same bytes as the code it replaced, drawn apart from painting, in any number of
painting processes."""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lmmreg.config import DemoConfig
from lmmreg.data import demo
from lmmreg.data.corpus import TRAIN, CaptionSpec, corpus_item, world_prototypes
from lmmreg.data.demo import BACKGROUNDS, COLORS, generate_demo, paint, random_scene, render_scene, scene_draws


def _reference_render(scene: dict, size: int, rng: np.random.Generator) -> Image.Image:
    """render_scene as it was before it was split into scene_draws and paint (commit 7ea93da): one function
    drawing its random numbers as it paints, the texture in float64. The reference the split must match."""
    lo, hi = (np.array(c, dtype=np.float64) for c in BACKGROUNDS[scene["background"]])
    t = np.linspace(0, 1, size)[:, None, None]
    bg = lo + (hi - lo) * t + rng.normal(0, 6, (size, 1, 3))
    img = Image.fromarray(np.clip(np.broadcast_to(bg, (size, size, 3)), 0, 255).astype(np.uint8))
    texture = scene.get("texture", "plain")
    if texture != "plain":
        arr = np.asarray(img, dtype=np.float64)
        yy, xx = np.mgrid[0:size, 0:size]
        step = max(4, size // 8)
        if texture == "striped":
            mask = (yy // (step // 2)) % 2 == 0
        elif texture == "dotted":
            mask = ((yy % step - step / 2) ** 2 + (xx % step - step / 2) ** 2) < (step / 4) ** 2
        else:
            mask = ((yy // step) + (xx // step)) % 2 == 0
        arr[mask] += 28.0 if arr.mean() < 128 else -28.0
        img.paste(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    draw = ImageDraw.Draw(img)
    s = size / 64
    extra = scene.get("extra", "none")
    if extra == "moon":
        x = rng.uniform(6, 14) * s if rng.random() < 0.5 else size - rng.uniform(6, 14) * s
        y = rng.uniform(6, 12) * s
        draw.ellipse((x - 5 * s, y - 5 * s, x + 5 * s, y + 5 * s), fill=(245, 240, 200))
    elif extra == "flag":
        x = rng.uniform(8, size - 16 * s)
        draw.rectangle((x, 6 * s, x + 1.5 * s, 26 * s), fill=(90, 70, 50))
        draw.polygon([(x + 1.5 * s, 6 * s), (x + 12 * s, 10 * s), (x + 1.5 * s, 14 * s)], fill=(230, 30, 120))
    elif extra == "fence":
        y = size - rng.uniform(6, 10) * s
        draw.rectangle((0, y, size, y + 1.5 * s), fill=(120, 90, 60))
        for x in np.arange(2 * s, size, 7 * s):
            draw.rectangle((x, y - 5 * s, x + 1.5 * s, y + 5 * s), fill=(120, 90, 60))
    base = np.array(COLORS[scene["color"]], dtype=np.float64)
    r = size * (0.18 if scene["size"] == "large" else 0.11)
    for cx, cy in demo._centres(scene.get("layout", "scattered"), scene["count"], size, r, rng):
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
            draw.polygon(demo._polygon(scene["shape"], cx, cy, rr), fill=fill)  # unchanged
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_render_scene_draws_the_same_bytes_as_before_and_as_paint_of_its_draws():
    rng = np.random.default_rng(123)
    for i in range(300):  # every attribute value many times over, at two sizes
        scene = random_scene(rng)
        size = 64 if i % 3 else 32
        ref = np.asarray(_reference_render(scene, size, np.random.default_rng(i)))
        new = np.asarray(render_scene(scene, size, np.random.default_rng(i)))
        split = np.asarray(paint(scene, size, scene_draws(scene, size, np.random.default_rng(i))))
        assert np.array_equal(ref, new), scene
        assert np.array_equal(new, split), scene


def test_scene_draws_leave_the_stream_where_render_scene_does():
    scene = random_scene(np.random.default_rng(5))
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    render_scene(scene, 64, a)
    scene_draws(scene, 64, b)
    assert a.random() == b.random()  # the next scene of a dataset starts from the same state


def test_corpus_items_keep_their_bytes():
    kw = {"seed": 0, "stream": TRAIN, "image_size": 64, "n_captions": 2, "spec": CaptionSpec(),
          "protos": world_prototypes(0)}
    for i in range(50):
        img, caps, scene = corpus_item(i, **kw)
        rng = np.random.default_rng([0, TRAIN, i])
        scene_ref = random_scene(rng)
        assert scene_ref == scene and np.array_equal(np.asarray(_reference_render(scene_ref, 64, rng)), img)


def _tree_digest(root) -> dict[str, str]:
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def test_demo_dataset_bytes_do_not_depend_on_the_painting_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "CHUNK", 7)  # several chunks, a short last one
    cfg = DemoConfig(n_classes=3, train_per_class=5, test_per_class=4, image_size=32)
    one = generate_demo(cfg, tmp_path / "one", workers=1)
    two = generate_demo(cfg, tmp_path / "two", workers=2)
    assert one == two == {"images": 27, "classes": 3}
    digests = _tree_digest(tmp_path / "one")
    assert len(digests) == 27 + 2 and digests == _tree_digest(tmp_path / "two")
