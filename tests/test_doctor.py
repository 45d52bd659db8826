"""`python -m lmmreg doctor`: each check against the real thing it checks (folders, caches, a local OpenAI-compatible
server, SQLite, DVC's config), and the whole command on the paper's setting, not ready and ready."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml

from lmmreg import doctor
from lmmreg.clip.weights import pretrained_tag_cfg
from lmmreg.config import parse_params
from lmmreg.data.checks import check_datasets
from lmmreg.doctor import MISSING, OK, WARN
from tests.conftest import REPO
from tests.data_fixtures import build_bar_tree, build_ucf101_tree
from tests.dvc_repo import free_port
from tests.test_describe_openai import FakeChatServer

BAR_SMALL = {c: (3, 1) for c in ("climbing", "diving", "fishing", "racing", "throwing", "pole vaulting")}


def paper_params(**sections) -> dict:
    """configs/paper.yaml as a user runs it with BAR only; `sections` update its sections."""
    raw = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    raw["datasets"] = ["bar"]
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(raw.get(key), dict) else value
    return raw


@pytest.fixture
def no_network_weights(tmp_path, monkeypatch):
    """Empty weight caches, and the hub's address a closed port: what offline looks like, at once."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LMMREG_CLIP_CACHE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    return tmp_path


# ------------------------------------------------------------------------------------------------ datasets


def test_dataset_in_place_is_ready_and_a_missing_one_says_where_to_get_it(tmp_path):
    params = parse_params(paper_params(datasets=["bar", "ucf101"]))
    build_bar_tree(tmp_path / "data/raw/bar")  # the paper's 1,941 / 654
    bar, ucf = check_datasets(params, tmp_path)
    assert bar.status == OK and "1941 train / 654 test, 6 classes (as in the paper)" in bar.detail
    assert ucf.status == MISSING and "data/raw/ucf101: raw dataset folder not found" in ucf.detail
    assert "UCF-101-midframes.zip" in ucf.fix and "CoOp" in ucf.fix and "dvc add data/raw/ucf101" in ucf.fix


def test_dataset_counts_and_absent_files(tmp_path):
    params = parse_params(paper_params(datasets=["bar", "ucf101"]))
    build_bar_tree(tmp_path / "data/raw/bar", counts=BAR_SMALL)
    build_ucf101_tree(tmp_path / "data/raw/ucf101")
    bar, ucf = check_datasets(params, tmp_path)
    assert bar.status == WARN and "train 18 vs 1941" in bar.detail  # a subset works, and is said so
    # What was found is data: the disk estimate counts these images, not the paper's.
    assert (bar.dataset, bar.counts) == ("bar", {"train": 18, "test": 6, "classes": 6})
    assert doctor._dataset_counts(params, [bar, ucf])["bar"] == 18 + 6
    # The shipped split lists 13,320 videos' frames; the fixture holds a few: the rest are absent.
    assert ucf.status == MISSING and "listed file(s) absent" in ucf.detail and "UCF-101-midframes" in ucf.fix


def test_misplaced_bar_names_the_layout(tmp_path):
    params = parse_params(paper_params())
    build_bar_tree(tmp_path / "elsewhere", counts=BAR_SMALL)
    (tmp_path / "data/raw/bar").mkdir(parents=True)
    shutil.move(str(tmp_path / "elsewhere"), tmp_path / "data/raw/bar/BAR")  # one folder too deep
    (bar,) = check_datasets(params, tmp_path)
    assert bar.status == MISSING and "train/ and test/, flat" in bar.fix and "alinlab/BAR" in bar.fix


def test_prepare_stage_names_layout_source_and_place(tmp_path):
    from lmmreg.data.checks import DatasetError
    from lmmreg.stages import prepare

    params = parse_params(paper_params())
    with pytest.raises(DatasetError) as err:
        prepare.main(params, dataset="bar", raw=tmp_path / "data/raw/bar", out=tmp_path / "out")
    msg = str(err.value)
    assert "raw dataset folder not found" in msg and "git clone https://github.com/alinlab/BAR" in msg
    assert f"place or symlink it at {tmp_path / 'data/raw/bar'}" in msg and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ weights


def test_missing_weights_offline_in_seconds(no_network_weights):
    params = parse_params(paper_params())
    assert pretrained_tag_cfg(params.clip)["hf_hub"]
    t0 = time.monotonic()
    check = doctor.check_weights(params, no_network_weights)
    assert time.monotonic() - t0 < 30  # seconds, not the 90 s of hub retries (CI shares its cores)
    assert check.status == MISSING and "not in the local caches, and offline" in check.detail
    assert "huggingface-cli download timm/vit_large_patch14_clip_224.openai" in check.fix and "curl" in check.fix


def test_weights_reachable_but_not_cached_is_a_warning(no_network_weights, monkeypatch):
    with FakeChatServer() as hub:  # something listening where the hub would be
        monkeypatch.setenv("HF_ENDPOINT", hub.url.removesuffix("/v1"))
        check = doctor.check_weights(parse_params(paper_params()), no_network_weights)
    assert check.status == WARN and "the first CLIP stage downloads them" in check.detail


def test_weights_in_the_hub_cache_are_ready(no_network_weights):
    snap = no_network_weights / "hf/models--timm--vit_large_patch14_clip_224.openai/snapshots/0123abc"
    snap.mkdir(parents=True)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs/main").write_text("0123abc")
    (snap / "open_clip_model.safetensors").write_bytes(b"weights")
    check = doctor.check_weights(parse_params(paper_params()), no_network_weights)
    assert check.status == OK and str(snap / "open_clip_model.safetensors") in check.detail


def test_local_checkpoint_is_ready_and_a_missing_path_is_not(tmp_path):
    import open_clip

    from lmmreg.clip.arch import register_model_configs
    from lmmreg.clip.weights import save_clip_checkpoint

    register_model_configs()
    model = open_clip.create_model("lmmreg-tiny-quickgelu")
    save_clip_checkpoint(model, tmp_path / "clip.pt", arch="lmmreg-tiny-quickgelu", made_by={"test": True})
    clip = {"model": "lmmreg-tiny-quickgelu", "pretrained": str(tmp_path / "clip.pt")}
    assert doctor.check_weights(parse_params(paper_params(clip=clip)), tmp_path).status == OK
    gone = doctor.check_weights(parse_params(paper_params(clip={**clip, "pretrained": "nope/clip.pt"})), tmp_path)
    assert gone.status == MISSING and "nope/clip.pt not found" in gone.detail and "open_clip tag" in gone.fix


# ------------------------------------------------------------------------------------------------ describer


def test_openai_one_real_request_parsed(tmp_path):
    build_bar_tree(tmp_path / "data/raw/bar", counts=BAR_SMALL)
    with FakeChatServer() as server:
        params = parse_params(paper_params(describe={"model": "tiny-vlm", "options": {"base_url": server.url}}))
        check = doctor.check_describer(params, tmp_path)
    assert check.status == OK and "10 of 10 descriptions parsed" in check.detail
    (req,) = server.requests  # exactly one request, with a real image of the dataset and the configured prompt
    assert req["prompt"] == params.describe.prompt and req["model"] == "tiny-vlm"
    first = sorted((tmp_path / "data/raw/bar/train").iterdir())[0]
    assert req["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()


def test_openai_no_server_in_seconds(tmp_path):
    port = free_port()
    params = parse_params(paper_params(describe={"options": {"base_url": f"http://127.0.0.1:{port}/v1"}}))
    t0 = time.monotonic()
    check = doctor.check_describer(params, tmp_path)  # no dataset either: a rendered image is sent
    assert time.monotonic() - t0 < 30  # seconds, not the 90 s of hub retries (CI shares its cores)
    assert check.status == MISSING and f"no server at http://127.0.0.1:{port}/v1" in check.detail
    assert f"vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port {port}" in check.fix


def test_openai_wrong_key_or_model(tmp_path):
    with FakeChatServer() as server:
        params = parse_params(paper_params(describe={"model": "tiny-vlm", "options": {"base_url": server.url}}))
        server.handle = lambda *a: (404, {"error": {"message": "model not found"}}, {})  # a server without it
        check = doctor.check_describer(params, tmp_path)
    assert check.status == MISSING and "HTTP 404" in check.detail and "describe.model" in check.fix


def test_minigpt4_checkout_and_file_backend(tmp_path):
    mg = {"backend": "minigpt4", "model": "minigpt4-vicuna7b", "options": {"repo": str(tmp_path / "MiniGPT-4")}}
    check = doctor.check_describer(parse_params(paper_params(describe=mg)), tmp_path)
    assert check.status == MISSING and "no minigpt4/ package" in check.detail and "git clone" in check.fix
    (tmp_path / "MiniGPT-4/minigpt4").mkdir(parents=True)
    (tmp_path / "MiniGPT-4/eval_configs").mkdir()
    (tmp_path / "MiniGPT-4/eval_configs/minigpt4_eval.yaml").write_text("model: {}\n")
    assert doctor.check_describer(parse_params(paper_params(describe=mg)), tmp_path).status == OK

    imp = {"backend": "file", "model": "imported", "options": {}, "import_file": "data/imports/mine.jsonl"}
    assert doctor.check_describer(parse_params(paper_params(describe=imp)), tmp_path).status == MISSING
    (tmp_path / "data/imports").mkdir(parents=True)
    (tmp_path / "data/imports/mine.jsonl").write_text(json.dumps({"id": "a", "descriptions": ["x"]}) + "\n")
    assert doctor.check_describer(parse_params(paper_params(describe=imp)), tmp_path).status == OK


def test_transformers_model_not_in_cache(no_network_weights):
    hf = {"backend": "transformers", "model": "Qwen/Qwen2.5-VL-7B-Instruct", "options": {}}
    check = doctor.check_describer(parse_params(paper_params(describe=hf)), no_network_weights)
    assert check.status == MISSING and "not in the local Hugging Face cache" in check.detail
    assert "huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct" in check.fix


@pytest.mark.slow
def test_transformers_local_model_folder_loads(tmp_path):
    """A local folder with a config transformers can load and weight files (imports transformers: slow)."""
    model = tmp_path / "my-vlm"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    (model / "model.safetensors").write_bytes(b"0")
    hf = {"backend": "transformers", "model": str(model), "options": {}}
    check = doctor.check_describer(parse_params(paper_params(describe=hf)), tmp_path)
    assert check.status == OK and "BertConfig" in check.detail


# ------------------------------------------------------------------------------------------------ CUDA and disk


def fake_gpu(monkeypatch, *, free_gib: float) -> None:
    """torch.cuda answering as one 80 GiB GPU with `free_gib` free (what a CPU-only test machine cannot have)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (int(free_gib * 2**30), 80 * 2**30))


def test_cuda_against_the_model(monkeypatch):
    import torch

    paper = parse_params(paper_params())
    demo = parse_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    need = doctor.gpu_need_bytes("ViT-L-14-quickgelu")
    assert 2.5 * 2**30 < need < 8 * 2**30  # 428M parameters in fp32, twice, plus 2 GiB
    fake_gpu(monkeypatch, free_gib=40)
    check = doctor.check_cuda(paper)
    assert check.status == OK and "Fake GPU: 40.0 of 80.0 GiB free" in check.detail
    fake_gpu(monkeypatch, free_gib=need / 2**30 - 0.5)  # another process holds the rest
    short = doctor.check_cuda(paper)
    assert short.status == MISSING and "free the GPU" in short.fix
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    none = doctor.check_cuda(paper)
    assert none.status == WARN and "run on CPU" in none.detail
    assert doctor.check_cuda(demo).status == OK  # the demo's tiny CLIP needs no GPU


def test_disk_estimate_and_shortage(tmp_path, monkeypatch):
    paper = parse_params(paper_params(datasets=["ucf101", "era", "bar"]))
    counts = {"ucf101": 13320, "era": 2864, "bar": 2595}
    need = doctor.disk_need_bytes(paper, counts)
    assert 1 * 2**30 < need < 20 * 2**30  # weights 1.7 GB + ERA frames + features/text, x2 for DVC's cache
    g2 = parse_params(paper_params(datasets=["ucf101", "era", "bar"], clip={"unlocked_groups": 2}))
    assert doctor.disk_need_bytes(g2, counts) > 5 * need  # 257 tokens per image cached, not 1
    assert doctor.check_disk(paper, tmp_path, counts).status == OK
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 * 2**30, 99 * 2**30, 2**30))
    short = doctor.check_disk(paper, tmp_path, counts)
    assert short.status == MISSING and "1.0 GiB free" in short.detail and "dvc cache dir" in short.fix


# ------------------------------------------------------------------------------------------------ MLflow and DVC


def test_mlflow_sqlite_store(mlflow_root):
    assert doctor.check_mlflow(mlflow_root).status == OK  # not created yet, the folder is writable
    (mlflow_root / "mlflow.db").write_bytes(b"")
    import sqlite3

    sqlite3.connect(mlflow_root / "mlflow.db").execute("create table t (x)").connection.commit()
    wrong = doctor.check_mlflow(mlflow_root)
    assert wrong.status == MISSING and "is not an MLflow store" in wrong.detail
    (mlflow_root / "mlflow.db").unlink()
    from lmmreg import tracking

    tracking.init_store()
    check = doctor.check_mlflow(mlflow_root)
    assert check.status == OK and "(writable)" in check.detail


def test_mlflow_server_not_running(mlflow_root, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    check = doctor.check_mlflow(mlflow_root)
    assert check.status == MISSING and "does not answer" in check.detail and "mlflow server" in check.fix
    assert time.monotonic() - t0 < 30  # seconds, not the 90 s of hub retries (CI shares its cores)


@pytest.mark.slow
def test_mlflow_server_read_and_write(tmp_path, mlflow_root, monkeypatch):
    from tests.dvc_repo import local_server

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1"]
    with local_server(cmd, url=f"{url}/health", log=tmp_path / "server.log"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        assert "not created yet" in doctor.check_mlflow(mlflow_root).detail
        from lmmreg import tracking

        tracking.init_store()
        check = doctor.check_mlflow(mlflow_root)
    assert check.status == OK and "(read and write)" in check.detail


def test_dvc_remote(tmp_path):
    (tmp_path / ".dvc").mkdir()
    assert doctor.check_dvc_remote(tmp_path).status == OK  # none configured
    store = tmp_path / "remote"
    (tmp_path / ".dvc/config").write_text(f"[core]\n    remote = team\n['remote \"team\"']\n    url = {store}\n")
    assert doctor.check_dvc_remote(tmp_path).status == MISSING
    store.mkdir()
    assert doctor.check_dvc_remote(tmp_path).status == OK
    port = free_port()
    (tmp_path / ".dvc/config.local").write_text(f"['remote \"team\"']\n    url = http://127.0.0.1:{port}/dvc\n")
    check = doctor.check_dvc_remote(tmp_path)
    assert check.status == MISSING and f"127.0.0.1:{port} unreachable" in check.detail


# ------------------------------------------------------------------------------------------------ the command


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.slow
def test_paper_setting_without_server_and_weights(tmp_path):
    """The issue's check: paper.yaml with BAR in place, no server, no weights -> non-zero within 30 s, the
    server and the weights missing, the dataset ready, nothing written."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    port = free_port()  # the paper's 8000 may be a developer's running server
    raw = paper_params(describe={"options": {"base_url": f"http://127.0.0.1:{port}/v1", "concurrency": 64}})
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    build_bar_tree(root / "data/raw/bar")
    before = files_under(root)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "HOME": str(tmp_path / "home"),
           "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lmmreg", "doctor"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    took = time.monotonic() - t0
    print(f"\ndoctor: {took:.1f} s\n{done.stdout}")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(ln.startswith("ready") and "dataset bar" in ln for ln in lines)
    assert any(ln.startswith("MISSING") and "CLIP weights" in ln for ln in lines)
    assert any(ln.startswith("MISSING") and "describer openai" in ln for ln in lines)
    assert f"vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port {port}" in done.stdout
    assert files_under(root) == before
    assert took < 180  # 9-33 s on an idle machine (issue note); CI shares its cores: this guards against minutes


def test_paper_setting_ready_with_a_server_and_a_local_checkpoint(tmp_path, capsys, monkeypatch):
    import open_clip

    from lmmreg.clip.arch import register_model_configs
    from lmmreg.clip.weights import save_clip_checkpoint

    root = tmp_path / "project"
    root.mkdir()
    shutil.copy2(REPO / "dvc.yaml", root / "dvc.yaml")
    build_bar_tree(root / "data/raw/bar", counts=BAR_SMALL)
    register_model_configs()
    save_clip_checkpoint(open_clip.create_model("lmmreg-tiny-quickgelu"), root / "models/clip.pt",
                         arch="lmmreg-tiny-quickgelu", made_by={"test": True})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(root))
    with FakeChatServer() as server:
        raw = paper_params(describe={"model": "tiny-vlm", "options": {"base_url": server.url, "concurrency": 64}},
                           clip={"model": "lmmreg-tiny-quickgelu", "pretrained": "models/clip.pt"})
        (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        code = doctor.main(["--root", str(root)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "params.yaml: ready" in out and MISSING not in out
    assert len(server.requests) == 1
