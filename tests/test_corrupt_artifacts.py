"""A truncated or damaged cached artifact stops with an error naming the file and the fix (`dvc checkout --force`
or `dvc repro -f <stage>`), never a bare unpickling traceback, and never a silently wrong result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lmmreg.artifacts import Artifact, CorruptArtifactError, load_artifact, save_artifact
from tests.conftest import REPO


def write(path: Path) -> tuple[Path, torch.Tensor]:
    x = torch.randn(40, 16)
    save_artifact(path, Artifact([f"img{i}" for i in range(40)], torch.arange(40) % 4, {"x": x, "h": x.half()},
                                 {"model": "m"}))
    return path, x


def flip_in_tensor_data(path: Path, x: torch.Tensor) -> None:
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(x.numpy().tobytes()[:32])
    assert at > 0
    raw[at + 77] ^= 0x40
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "bit flip in the data"])
def test_damaged_feature_file_names_itself_and_the_fix(tmp_path, damage):
    path, x = write(tmp_path / "data/features/bar.pt")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) * 2 // 3])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(raw)))
    else:
        flip_in_tensor_data(path, x)  # still a valid zip and pickle: only the checksum can tell
    with pytest.raises(CorruptArtifactError) as err:
        load_artifact(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and "Traceback" not in msg and "\n" not in msg
    assert f"dvc checkout --force {path}" in msg and "dvc repro -f features@bar" in msg


def test_text_artifact_points_at_its_stage_output(tmp_path):
    path, _ = write(tmp_path / "data/text/ucf101/descriptions.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CorruptArtifactError, match=r"dvc checkout --force \S*data/text/ucf101`.*embed_text@ucf101"):
        load_artifact(path)


def test_inconsistent_rows_are_refused(tmp_path):
    path = tmp_path / "data/centroids/demo.pt"
    path.parent.mkdir(parents=True)
    torch.save({"format": "lmmreg-artifact/1", "ids": ["a", "b"], "labels": torch.tensor([0, 1]),
                "tensors": {"c": torch.zeros(3, 4)}, "meta": {}}, path)
    with pytest.raises(CorruptArtifactError, match=r"2 ids do not match .*\['c'\].*centroids@demo"):
        load_artifact(path)


def test_intact_and_older_files_load(tmp_path):
    path, x = write(tmp_path / "a.pt")
    assert torch.equal(load_artifact(path).tensors["x"], x)
    blob = torch.load(path, weights_only=True)
    del blob["crc32"]  # written before checksums existed (in a DVC cache): read as before
    torch.save(blob, path)
    assert torch.equal(load_artifact(path).tensors["h"], x.half())


def test_stage_stops_with_one_line(tmp_path):
    """The centroids stage as DVC runs it, on a damaged text cache: exit 2, the file and the fix, no traceback,
    no output."""
    from lmmreg.config import parse_params
    from lmmreg.data.demo import generate_demo
    from lmmreg.stages import prepare
    from tests.conftest import small_raw_params

    raw = small_raw_params()
    params = parse_params(raw)
    generate_demo(params.demo, tmp_path / "data/raw/demo")
    prepare.main(params, dataset="demo", raw=tmp_path / "data/raw/demo", out=tmp_path / "data/prepared/demo")
    text, _ = write(tmp_path / "data/text/demo/descriptions.pt")
    text.write_bytes(text.read_bytes()[:-200])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "lmmreg.stages.centroids", "--manifest", "data/prepared/demo",
                           "--text", "data/text/demo", "--out", "data/centroids/demo.pt"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "data/text/demo/descriptions.pt: unreadable, truncated or damaged" in done.stderr
    assert "dvc repro -f embed_text@demo" in done.stderr and not (tmp_path / "data/centroids/demo.pt").exists()


def test_damaged_clip_checkpoint_names_the_file(tmp_path):
    import open_clip

    from lmmreg.clip.arch import register_model_configs
    from lmmreg.clip.build import build_clip
    from lmmreg.clip.weights import save_clip_checkpoint
    from lmmreg.config import ClipConfig

    register_model_configs()
    ckpt = tmp_path / "models/clip_pretrain/checkpoint.pt"
    save_clip_checkpoint(open_clip.create_model("lmmreg-tiny-quickgelu"), ckpt, arch="lmmreg-tiny-quickgelu",
                         made_by={})
    ckpt.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(ValueError) as err:
        build_clip(ClipConfig(model="lmmreg-tiny-quickgelu", pretrained=str(ckpt)))
    msg = str(err.value)
    assert f"{ckpt} is unreadable, truncated or damaged" in msg
    assert f"dvc checkout --force {ckpt.parent}" in msg and "dvc repro -f pretrain_clip" in msg
