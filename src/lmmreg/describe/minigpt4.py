"""`minigpt4` backend: the paper's LMM, through the official Vision-CAIR/MiniGPT-4 checkout, driven the way
its `demo.py` drives it: `Config` from the eval config, the registered model and vis processor,
`Chat(model, vis_processor, device, stopping_criteria)`, then per image `upload_img`, `encode_img`,
`ask(prompt)`, `answer(...)`.

Options: `repo` (the checkout, required), `cfg_path` (default `eval_configs/minigpt4_eval.yaml`, relative
to the checkout), `ckpt` (overrides the config's `model.ckpt`), `gpu_id` (default 0). MiniGPT-4 has no
batch mode (one image at a time, seconds each): shard across GPUs with `--shard i/n`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from PIL import Image

from lmmreg.config import ConfigError, DescribeConfig
from lmmreg.describe.base import Answer, DescribeItem, check_options, item_seed, option
from lmmreg.preflight import MISSING, OK, Verdict

log = logging.getLogger(__name__)

KNOWN_OPTIONS = {"repo", "cfg_path", "ckpt", "gpu_id"}
# demo.py: '###' ends a Vicuna turn and is tokenised two ways by the LLaMA tokenizer.
STOP_WORDS_IDS = [[835], [2277, 29937]]


class MiniGPT4Describer:
    max_batch = 1

    def __init__(self, cfg: DescribeConfig):
        check_options(cfg, KNOWN_OPTIONS)
        self.cfg = cfg
        repo = Path(option(cfg, "repo", str, why="path to a Vision-CAIR/MiniGPT-4 checkout")).resolve()
        if not (repo / "minigpt4").is_dir():
            raise ConfigError(f"describe.options.repo: {repo} has no minigpt4/ package (clone Vision-CAIR/MiniGPT-4)")
        cfg_path = Path(option(cfg, "cfg_path", str, "eval_configs/minigpt4_eval.yaml"))
        cfg_path = cfg_path if cfg_path.is_absolute() else repo / cfg_path
        if not cfg_path.is_file():
            raise ConfigError(f"describe.options.cfg_path: {cfg_path} not found")
        gpu_id = option(cfg, "gpu_id", int, 0)
        overrides = [f"model.ckpt={option(cfg, 'ckpt', str)}"] if "ckpt" in cfg.options else []

        if str(repo) not in sys.path:
            sys.path.insert(0, str(repo))  # the checkout is not an installable package; demo.py runs from its root
        mg = importlib.import_module("minigpt4")  # importing the package registers its models and processors
        config_mod = importlib.import_module("minigpt4.common.config")
        registry = importlib.import_module("minigpt4.common.registry").registry
        conv_mod = importlib.import_module("minigpt4.conversation.conversation")
        log.info("MiniGPT-4 from %s (%s), config %s", repo, getattr(mg, "__file__", "?"), cfg_path)

        config = config_mod.Config(SimpleNamespace(cfg_path=str(cfg_path), options=overrides, gpu_id=gpu_id))
        model_config = config.model_cfg
        model_config.device_8bit = gpu_id
        self.device = f"cuda:{gpu_id}" if torch.cuda.is_available() else "cpu"
        model = registry.get_model_class(model_config.arch).from_config(model_config).to(self.device)
        conv_dict = {"pretrain_vicuna0": conv_mod.CONV_VISION_Vicuna0, "pretrain_llama2": conv_mod.CONV_VISION_LLama2}
        if model_config.model_type not in conv_dict:
            raise ConfigError(f"describe.options.cfg_path: model_type {model_config.model_type!r} "
                              f"not in {list(conv_dict)}")
        self.conv_template = conv_dict[model_config.model_type]
        vis_cfg = config.datasets_cfg.cc_sbu_align.vis_processor.train
        vis_processor = registry.get_processor_class(vis_cfg.name).from_config(vis_cfg)
        stops = [torch.tensor(ids).to(device=self.device) for ids in STOP_WORDS_IDS]
        from transformers import StoppingCriteriaList

        stopping = StoppingCriteriaList([conv_mod.StoppingCriteriaSub(stops=stops)])
        self.chat = conv_mod.Chat(model, vis_processor, device=self.device, stopping_criteria=stopping)

    def describe_batch(self, items: list[DescribeItem]) -> list[Answer]:
        cfg = self.cfg
        answers = []
        for item in items:
            try:
                with Image.open(item.path) as im:
                    image = im.convert("RGB")
            except OSError as e:
                answers.append(Answer(raw="", error=f"{item.path}: cannot read image ({e})"))
                continue
            conv, img_list = self.conv_template.copy(), []
            self.chat.upload_img(image, conv, img_list)
            self.chat.encode_img(img_list)
            self.chat.ask(cfg.prompt, conv)
            torch.manual_seed(item_seed(cfg.seed, item.sha256, item.attempt))  # MiniGPT-4 always samples
            text, tokens = self.chat.answer(conv=conv, img_list=img_list, num_beams=1, temperature=cfg.temperature,
                                            top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty,
                                            max_new_tokens=cfg.max_new_tokens, max_length=2000)
            n_new = len(tokens)
            answers.append(Answer(raw=text, completion_tokens=n_new, truncated=n_new >= cfg.max_new_tokens))
        return answers


def preflight(cfg: DescribeConfig, *, root: Path, sample_image: Callable[[], Path]) -> Verdict:
    """The checkout, its eval config and the checkpoint, where the options say; nothing loaded."""
    opts = cfg.options
    clone = "git clone https://github.com/Vision-CAIR/MiniGPT-4 and set describe.options.repo (docs/describe.md)"
    if not opts.get("repo"):
        return MISSING, "describe.options.repo is not set", clone
    repo = Path(str(opts["repo"])).expanduser().resolve()
    if not (repo / "minigpt4").is_dir():
        return MISSING, f"{repo}: no minigpt4/ package there", clone
    cfg_path = repo / str(opts.get("cfg_path", "eval_configs/minigpt4_eval.yaml"))
    if not cfg_path.is_file():
        return MISSING, f"{cfg_path}: eval config not found", "set describe.options.cfg_path"
    if opts.get("ckpt") and not Path(str(opts["ckpt"])).expanduser().is_file():
        return MISSING, f"{opts['ckpt']}: checkpoint not found", "download the pretrained MiniGPT-4 checkpoint"
    return OK, f"checkout {repo}, config {cfg_path.name}", ""
