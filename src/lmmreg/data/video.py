"""One frame per video, decoded with PyAV (FFmpeg) and cached so each video is decoded once.

ERA ships videos; the paper classifies one frame per video without saying which, so the frame is a
parameter (`sources.<dataset>.options.frame`): `middle` (default, frame n // 2 as in UCF-101's midframes),
`first`, `last`, an integer index (negative counts from the end) or a fraction of the length in [0, 1].
Frames are written losslessly as PNG. `frames.jsonl` in the frames folder records, per video, the video's
sha256, the frame setting, the index chosen and the frame's sha256; a video whose record matches (and
whose frame file is intact) is not decoded again, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from PIL import Image

from lmmreg.data.images import BadImageError, check_nonempty_file, check_pixels
from lmmreg.data.manifest import sha256_file
from lmmreg.errors import InputError
from lmmreg.progress import progress

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
INDEX_NAME = "frames.jsonl"


def is_video(path: str | Path) -> bool:
    return str(path).lower().endswith(VIDEO_EXTENSIONS)


def parse_frame_spec(spec: object) -> str:
    """Canonical text of a frame choice: `middle` | `first` | `last` | `index:<int>` | `fraction:<float>`."""
    if spec in ("middle", "first", "last"):
        return str(spec)
    if isinstance(spec, bool):
        pass
    elif isinstance(spec, int):
        return f"index:{spec}"
    elif isinstance(spec, float) and 0.0 <= spec <= 1.0:
        return f"fraction:{spec!r}"
    raise InputError(f"sources.<dataset>.options.frame: expected middle, first, last, an integer index or a "
                     f"fraction in [0, 1], got {spec!r}")


def frame_index(spec: str, n_frames: int) -> int:
    """Which of `n_frames` decoded frames the canonical `spec` picks."""
    kind, _, value = spec.partition(":")
    if kind == "middle":
        return n_frames // 2
    if kind == "first":
        return 0
    if kind == "last":
        return n_frames - 1
    if kind == "fraction":
        return min(int(float(value) * n_frames), n_frames - 1)
    idx = int(value)
    if not -n_frames <= idx < n_frames:
        raise IndexError(f"frame {idx} requested but the video has {n_frames} frames")
    return idx % n_frames


def read_frame(path: str | Path, spec: str, *, max_pixels: int | None = None) -> tuple[Image.Image, int, int]:
    """Decode the frame `spec` picks from the first video stream: (RGB image, its index, number of frames).

    Frames are counted by decoding (container metadata is often missing or wrong), then the file is
    decoded again up to the chosen frame, so only one frame is ever held in memory.
    """
    import av  # lazily: only video datasets need FFmpeg

    path = Path(path)
    try:
        check_nonempty_file(path)
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadImageError(f"{path}: no video stream")
            stream = container.streams.video[0]
            check_pixels(path, stream.codec_context.width, stream.codec_context.height, max_pixels=max_pixels,
                         what=" per frame")
            n = sum(1 for _ in container.decode(stream))
        if n == 0:
            raise BadImageError(f"{path}: no decodable frame")
        idx = frame_index(spec, n)
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                if i == idx:
                    return frame.to_image().convert("RGB"), idx, n
        raise BadImageError(f"{path}: frame {idx} of {n} not decodable on the second pass")
    except BadImageError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError, EOFError) as e:
        raise BadImageError(f"{path}: cannot decode video ({type(e).__name__}: {e})") from e


def frame_name(video_rel: str) -> str:
    """Where a video's frame goes inside the frames folder: same relative path, `.png` instead of the video suffix."""
    return PurePosixPath(video_rel).with_suffix(".png").as_posix()


def load_index(frames_dir: Path) -> dict[str, dict]:
    """The last record per video in `frames.jsonl` (a torn last line from a killed run is ignored)."""
    index: dict[str, dict] = {}
    path = frames_dir / INDEX_NAME
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            index[rec["video"]] = rec
    return index


def _cached(frames_dir: Path, rec: dict | None, video_sha: str, spec: str) -> bool:
    if rec is None or rec.get("video_sha256") != video_sha or rec.get("frame") != spec:
        return False
    frame = frames_dir / rec["file"]
    return frame.is_file() and sha256_file(frame) == rec.get("frame_sha256")


def extract_frames(videos: list[str], *, raw_root: str | Path, frames_dir: str | Path, frame: object = "middle",
                   max_pixels: int | None = None, workers: int = 2) -> tuple[dict[str, str], list[dict]]:
    """Write one frame per video (paths relative to `raw_root`) under `frames_dir`, reusing cached frames.

    Returns ({video: frame path relative to frames_dir}, [{"video", "reason"} for each video that failed]).
    """
    raw_root, frames_dir = Path(raw_root), Path(frames_dir)
    spec = parse_frame_spec(frame)
    names: dict[str, str] = {}
    owner: dict[str, str] = {}  # frame name -> the video that claimed it
    for v in videos:
        name = frame_name(v)
        if owner.setdefault(name, v) != v:
            raise InputError(f"{raw_root / v} and {raw_root / owner[name]} would both become {frames_dir / name}; "
                             "rename one of them")
        names[v] = name
    frames_dir.mkdir(parents=True, exist_ok=True)
    index = load_index(frames_dir)

    def work(video: str) -> tuple[str, dict | None, str | None, bool]:
        src = raw_root / video
        if not src.is_file():
            return video, None, f"{src}: file not found", False
        video_sha = sha256_file(src)
        if _cached(frames_dir, index.get(video), video_sha, spec):
            return video, index[video], None, True
        try:
            img, idx, n = read_frame(src, spec, max_pixels=max_pixels)
        except BadImageError as e:
            return video, None, str(e), False
        out = frames_dir / names[video]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        img.save(tmp, format="PNG")
        tmp.replace(out)  # atomic: a killed run never leaves a half-written frame under the final name
        rec = {"video": video, "video_sha256": video_sha, "frame": spec, "frame_index": idx, "n_frames": n,
               "file": names[video], "frame_sha256": sha256_file(out)}
        return video, rec, None, False

    frames: dict[str, str] = {}
    bad: list[dict] = []
    reused = 0
    with ThreadPoolExecutor(max_workers=workers) as pool, (frames_dir / INDEX_NAME).open("a") as log_file:
        for video, rec, problem, hit in progress(pool.map(work, videos), total=len(videos), unit="video",
                                             desc="extract frames"):
            if problem is not None:
                bad.append({"video": video, "reason": problem.removeprefix(f"{raw_root / video}: ")})
                continue
            frames[video] = rec["file"]
            reused += hit
            if not hit:
                log_file.write(json.dumps(rec, sort_keys=True) + "\n")
                log_file.flush()  # one line per finished video: what makes an interrupted run resumable
    log.info("frames (%s): %d videos, %d decoded, %d reused from %s, %d failed", spec, len(videos),
             len(frames) - reused, reused, frames_dir, len(bad))
    return frames, bad
