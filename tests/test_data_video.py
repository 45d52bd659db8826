"""Video frames: the right frame of a real encoded video, decoded once, re-decoded only when something changed."""

from __future__ import annotations

import numpy as np
import pytest

import lmmreg.data.video as video
from lmmreg.data.images import BadImageError
from lmmreg.data.video import extract_frames, frame_index, parse_frame_spec, read_frame
from tests.data_fixtures import write_video


def _grey(img) -> float:
    return float(np.asarray(img)[16:, 16:].mean())  # away from the seed patch in the corner


@pytest.mark.parametrize("spec, canonical, n, idx", [
    ("middle", "middle", 7, 3), ("middle", "middle", 8, 4), ("first", "first", 7, 0), ("last", "last", 7, 6),
    (2, "index:2", 7, 2), (-1, "index:-1", 7, 6), (0.5, "fraction:0.5", 7, 3), (1.0, "fraction:1.0", 7, 6),
])
def test_frame_spec(spec, canonical, n, idx):
    assert parse_frame_spec(spec) == canonical
    assert frame_index(canonical, n) == idx


@pytest.mark.parametrize("spec", ["centre", 1.5, True, None])
def test_bad_frame_spec_names_the_option(spec):
    with pytest.raises(ValueError, match="options.frame"):
        parse_frame_spec(spec)


@pytest.mark.parametrize("codec, suffix", [("mpeg4", ".mp4"), ("libx264", ".mp4"), ("mjpeg", ".avi")])
def test_read_frame_picks_the_middle_frame(tmp_path, codec, suffix):
    path = write_video(tmp_path / f"v{suffix}", n_frames=7, codec=codec)
    img, idx, n = read_frame(path, "middle")
    assert (idx, n) == (3, 7) and img.mode == "RGB" and img.size == (32, 32)
    assert abs(_grey(img) - 90) < 8  # frame i is grey 30 * i
    img, idx, _ = read_frame(path, "index:-1")
    assert idx == 6 and abs(_grey(img) - 180) < 8


def test_read_frame_errors_name_the_file(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    write_video(tmp_path / "short.mp4", n_frames=3)
    full = write_video(tmp_path / "full.mp4", n_frames=30).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(full[: len(full) // 3])  # truncated: moov/index lost or frames missing
    with pytest.raises(BadImageError, match=r"empty\.mp4: zero-byte"):
        read_frame(tmp_path / "empty.mp4", "middle")
    with pytest.raises(BadImageError, match=r"junk\.mp4: cannot decode video"):
        read_frame(tmp_path / "junk.mp4", "middle")
    with pytest.raises(BadImageError, match=r"short\.mp4: cannot decode video \(IndexError: frame 5 requested"):
        read_frame(tmp_path / "short.mp4", "index:5")
    with pytest.raises(BadImageError, match=r"short\.mp4: 32x32 = 1024 pixels per frame exceeds the limit 100"):
        read_frame(tmp_path / "short.mp4", "middle", max_pixels=100)
    with pytest.raises(BadImageError, match=r"cut\.mp4: "):
        read_frame(tmp_path / "cut.mp4", "middle")


def test_extract_frames_caches_and_resumes(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    for k in range(3):
        write_video(raw / "train" / "Flood" / f"Flood_{k:03d}_01.mp4", seed=k)
    (raw / "train" / "Flood" / "Flood_009_01.mp4").write_bytes(b"")
    videos = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.mp4"))
    frames_dir = tmp_path / "frames"
    calls: list[str] = []
    real = video.read_frame
    monkeypatch.setattr(video, "read_frame", lambda p, *a, **k: (calls.append(p.name), real(p, *a, **k))[1])

    frames, bad = extract_frames(videos, raw_root=raw, frames_dir=frames_dir)
    assert frames["train/Flood/Flood_000_01.mp4"] == "train/Flood/Flood_000_01.png"
    assert (frames_dir / "train/Flood/Flood_000_01.png").is_file()
    assert bad == [{"video": "train/Flood/Flood_009_01.mp4", "reason": "zero-byte file"}]
    assert len(calls) == 4

    calls.clear()  # same videos, same frame choice: nothing decoded (the broken one is retried)
    assert extract_frames(videos, raw_root=raw, frames_dir=frames_dir)[0] == frames
    assert calls == ["Flood_009_01.mp4"]

    calls.clear()  # a replaced video, a damaged frame file: exactly those two are decoded again
    write_video(raw / "train/Flood/Flood_001_01.mp4", seed=99, n_frames=9)
    (frames_dir / "train/Flood/Flood_002_01.png").write_bytes(b"damaged")
    extract_frames(videos, raw_root=raw, frames_dir=frames_dir)
    assert sorted(calls) == ["Flood_001_01.mp4", "Flood_002_01.mp4", "Flood_009_01.mp4"]

    calls.clear()  # another frame choice re-decodes everything
    extract_frames(videos, raw_root=raw, frames_dir=frames_dir, frame="first")
    assert len(calls) == 4
    index = video.load_index(frames_dir)
    assert index["train/Flood/Flood_000_01.mp4"]["frame"] == "first"
    assert index["train/Flood/Flood_000_01.mp4"]["frame_index"] == 0


def test_extract_frames_refuses_name_clashes(tmp_path):
    write_video(tmp_path / "a" / "x.mp4")
    write_video(tmp_path / "a" / "x.avi", codec="mjpeg")
    with pytest.raises(ValueError, match=r"x\.avi and .*x\.mp4 would both become"):
        extract_frames(["a/x.mp4", "a/x.avi"], raw_root=tmp_path, frames_dir=tmp_path / "f")


def test_torn_index_line_is_ignored(tmp_path):
    write_video(tmp_path / "v.mp4")
    extract_frames(["v.mp4"], raw_root=tmp_path, frames_dir=tmp_path / "f")
    with (tmp_path / "f" / video.INDEX_NAME).open("a") as f:
        f.write('{"video": "v.mp4", "vid')  # a run killed mid-write
    assert set(video.load_index(tmp_path / "f")) == {"v.mp4"}
