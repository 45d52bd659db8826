"""Builders of tiny dataset trees that copy each real layout exactly (names, nesting, quirks), for the data tests.

Every image gets distinct pixels (hence a distinct sha256) unless a test asks for a duplicate; videos are real
files encoded with PyAV, each frame a different grey level so a test can tell which frame was extracted.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from lmmreg.config import Params, parse_params

REPO = Path(__file__).resolve().parents[1]

# The five classes of the UCF fixture: CoOp folder names and UCF's own file-name casing (note HandStand).
UCF_FIXTURE = {
    "Apply_Eye_Makeup": "ApplyEyeMakeup",
    "Handstand_Pushups": "HandStandPushups",
    "Skijet": "Skijet",
    "YoYo": "YoYo",
    "Playing_Daf": "PlayingDaf",
}
# BAR's real per-class (train, test) counts; test indices continue after the train ones.
BAR_COUNTS = {"climbing": (326, 105), "diving": (520, 159), "fishing": (163, 42), "racing": (336, 132),
              "throwing": (317, 85), "pole vaulting": (279, 131)}
# ERA folder names as the archive might spell them (not confirmed): each must reach its paper class.
ERA_FOLDERS = {
    "Post-earthquake": "post-earthquake", "Flood": "flood", "Fire": "fire", "Landslide": "landslide",
    "Mudslide": "mudslide", "Traffic_Collision": "traffic collision", "Traffic_Jam": "traffic congestion",
    "Harvesting": "harvesting", "Ploughing": "ploughing", "Constructing": "constructing",
    "Police_Chase": "police chase", "Conflict": "conflict", "Baseball": "baseball", "Basketball": "basketball",
    "Boating": "boating", "Cycling": "cycling", "Running": "running", "Soccer": "soccer", "Swimming": "swimming",
    "Car_Racing": "car racing", "Party": "party", "Concert": "concert", "Parade_Protest": "parade/protest",
    "Religious_Activity": "religious activity", "NonEvent": "non-event",
}


def image_bytes(seed: int, *, size: tuple[int, int] = (12, 10), fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A small image whose pixels (and so bytes) are unique to `seed`."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_image(path: Path, seed: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed, **kw))
    return path


def write_video(path: Path, *, n_frames: int = 7, size: int = 32, codec: str = "mpeg4", seed: int = 0) -> Path:
    """A real video: frame i is uniform grey 30 * i mod 256 (+ a small seed-dependent patch so videos differ)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for i in range(n_frames):
            arr = np.full((size, size, 3), (30 * i) % 256, dtype=np.uint8)
            arr[:8, :8] = (seed * 37) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def build_ucf101_tree(root: Path, *, train: int = 3, val: int = 1, test: int = 2) -> Path:
    """CoOp's `UCF-101-midframes/<Class_Folder>/v_<Name>_gXX_cYY.jpg` and a `split_zhou_UCF101.json` for it.

    Test videos come from groups g01-g07, train/val from g08-g25, as in the official split 1.
    """
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    seed = 0
    for label, (folder, name) in enumerate(UCF_FIXTURE.items()):
        for key, n, first_group in (("train", train, 8), ("val", val, 8 + train), ("test", test, 1)):
            for k in range(n):
                rel = f"{folder}/v_{name}_g{first_group + k:02d}_c01.jpg"
                write_image(root / "UCF-101-midframes" / rel, seed := seed + 1)
                split[key].append([rel, label, folder])
    (root / "split_zhou_UCF101.json").write_text(json.dumps(split))
    return root


def build_bar_tree(root: Path, counts: dict[str, tuple[int, int]] | None = None) -> Path:
    """alinlab/BAR: flat `train/` and `test/`, `<class>_<index>.jpg`, test indices after train's, a metadata.json."""
    counts = counts or BAR_COUNTS
    seed, meta = 10_000, {}
    for cls, (n_train, n_test) in counts.items():
        for idx in range(n_train + n_test):
            split = "train" if idx < n_train else "test"
            write_image(root / split / f"{cls}_{idx}.jpg", seed := seed + 1, size=(8, 8))
            meta[f"{cls}_{idx}"] = {"cls": cls, "train": split == "train", "source": "web"}
    (root / "metadata.json").write_text(json.dumps(meta))
    (root / "README.md").write_text("BAR: Biased Action Recognition (images are PNG)\n")
    return root


def build_era_tree(root: Path, *, per_split: int = 1, videos: bool = True, folders: dict | None = None) -> Path:
    """`<root>/Train|Test/<Folder>/<Folder>_<nnn>_<mm>.mp4` (or `.jpg` frames), one folder per ERA class."""
    seed = 20_000
    for split in ("Train", "Test"):
        for folder in folders or ERA_FOLDERS:
            for k in range(per_split):
                name = f"{folder}_{k + (0 if split == 'Train' else 100):03d}_01"
                seed += 1
                if videos:
                    write_video(root / split / folder / f"{name}.mp4", seed=seed)
                else:
                    write_image(root / split / folder / f"{name}.jpg", seed)
    return root


def make_params(sources: dict, *, datasets: list[str] | None = None, prepare: dict | None = None,
                **sections) -> Params:
    """The repository's params.yaml with `sources` (and any other section) replaced, checked like the real one."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["clip"]["pretrained"], raw["pretrain"]["enabled"] = "", False  # random init: never a real run's checkpoint
    raw["sources"] = sources
    raw["datasets"] = datasets or list(sources)
    if prepare:
        raw["prepare"] = {**raw["prepare"], **prepare}
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    return parse_params(raw, source="test params")
