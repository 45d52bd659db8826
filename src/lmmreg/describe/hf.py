"""`transformers` backend: any image-text-to-text model (Qwen2.5-VL, LLaVA, InstructBLIP, ...) by model id or
local directory, through `AutoProcessor` + `AutoModelForImageTextToText`, the processor's own chat template
and batched `generate`.

Options: `device` (default cuda if available), `dtype` (auto = bf16 on GPUs that have it, else fp16 on
GPU, fp32 on CPU), `batch_size` (default 8), `attn_implementation`, `trust_remote_code`. Sampling is
seeded per batch from the first image's sha256, so a re-run with the same batches gives the same text.
A batch that runs out of GPU memory is split in half and retried rather than aborting the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from lmmreg.config import ConfigError, DescribeConfig
from lmmreg.describe.base import Answer, DescribeItem, check_options, item_seed, option
from lmmreg.preflight import MISSING, OK, Verdict

log = logging.getLogger(__name__)

KNOWN_OPTIONS = {"device", "dtype", "batch_size", "attn_implementation", "trust_remote_code"}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class TransformersDescriber:
    def __init__(self, cfg: DescribeConfig):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        check_options(cfg, KNOWN_OPTIONS)
        if not cfg.model:
            raise ConfigError("describe.model: the transformers backend needs a model id or a local model directory")
        self.cfg = cfg
        self.device = torch.device(option(cfg, "device", str, "cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype = _pick_dtype(option(cfg, "dtype", str, "auto", check=lambda v: v in {"auto", *DTYPES},
                                        why=f"one of auto, {', '.join(DTYPES)}"), self.device)
        self.max_batch = option(cfg, "batch_size", int, 8, check=lambda v: v >= 1, why="must be >= 1")
        remote = option(cfg, "trust_remote_code", bool, False)
        extra = {}
        if "attn_implementation" in cfg.options:
            extra["attn_implementation"] = option(cfg, "attn_implementation", str)
        try:
            self.processor = AutoProcessor.from_pretrained(cfg.model, trust_remote_code=remote)
            self.model = AutoModelForImageTextToText.from_pretrained(cfg.model, dtype=self.dtype,
                                                                     trust_remote_code=remote, **extra)
        except (OSError, ValueError) as e:
            raise ConfigError(f"describe.model: cannot load {cfg.model!r} as an image-text-to-text model ({e})") from e
        self.model.to(self.device).eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        self.prompt_text = self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": cfg.prompt}]}],
            add_generation_prompt=True)
        eos = self.model.generation_config.eos_token_id
        self.stop_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = self.model.generation_config.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.pad_token_id if tokenizer is not None else None)
        log.info("transformers describer: %s on %s (%s), batch %d", cfg.model, self.device, self.dtype,
                 self.max_batch)

    def _generate(self, items: list[DescribeItem], images: list[Image.Image]) -> list[Answer]:
        cfg = self.cfg
        inputs = self.processor(text=[self.prompt_text] * len(images), images=images, return_tensors="pt",
                                padding=True)
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        sample = cfg.temperature > 0
        kwargs = {"max_new_tokens": cfg.max_new_tokens, "repetition_penalty": cfg.repetition_penalty,
                  "do_sample": sample}
        if sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)  # greedy: silence sampling defaults
        if self.pad_id is not None:
            kwargs["pad_token_id"] = self.pad_id
        torch.manual_seed(item_seed(cfg.seed, items[0].sha256, items[0].attempt))
        with torch.inference_mode():
            out = self.model.generate(**inputs, **kwargs)  # [B, prompt + new]
        new = out[:, inputs["input_ids"].shape[1]:].cpu()  # [B, <= max_new_tokens]
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        answers = []
        for row, text, n_prompt in zip(new.tolist(), texts, prompt_tokens, strict=True):
            stop = next((i for i, t in enumerate(row) if t in self.stop_ids), None)
            n_new = stop + 1 if stop is not None else len(row)
            answers.append(Answer(raw=text.strip(), prompt_tokens=int(n_prompt), completion_tokens=n_new,
                                  truncated=stop is None and len(row) >= cfg.max_new_tokens))
        return answers

    def _generate_splitting_on_oom(self, items: list[DescribeItem], images: list[Image.Image]) -> list[Answer]:
        try:
            return self._generate(items, images)
        except torch.cuda.OutOfMemoryError:
            if len(items) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(items) // 2
            log.warning("out of GPU memory at batch %d: retrying as %d + %d", len(items), half, len(items) - half)
            return (self._generate_splitting_on_oom(items[:half], images[:half])
                    + self._generate_splitting_on_oom(items[half:], images[half:]))

    def describe_batch(self, items: list[DescribeItem]) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(items)
        ok, images = [], []
        for i, item in enumerate(items):
            try:
                with Image.open(item.path) as im:
                    images.append(im.convert("RGB"))
                ok.append(i)
            except OSError as e:
                answers[i] = Answer(raw="", error=f"{item.path}: cannot read image ({e})")
        if ok:
            for i, ans in zip(ok, self._generate_splitting_on_oom([items[i] for i in ok], images), strict=True):
                answers[i] = ans
        return answers


def preflight(cfg: DescribeConfig, *, root: Path, sample_image: Callable[[], Path]) -> Verdict:
    """The model in the local Hugging Face cache (or a local folder) and its config loadable; no weights read."""
    if not cfg.model:
        return MISSING, "describe.model is empty", "set describe.model to a model id or a local model directory"
    fetch = f"huggingface-cli download {cfg.model}"
    local = Path(cfg.model).expanduser()
    if local.is_dir():
        where = str(local)
    else:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(cfg.model, "config.json")
        if not isinstance(hit, str):
            return MISSING, f"{cfg.model} is not in the local Hugging Face cache", f"fetch it: {fetch}"
        where = str(Path(hit).parent)
    if not any(Path(where).glob("*.safetensors")) and not any(Path(where).glob("*.bin")):
        return MISSING, f"{where}: config but no weight files", f"fetch them: {fetch}"
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(where, trust_remote_code=bool(cfg.options.get("trust_remote_code")))
    except (OSError, ValueError) as e:
        return MISSING, f"{cfg.model}: config not loadable ({str(e).splitlines()[0]})", f"re-fetch it: {fetch}"
    return OK, f"{where}: {type(conf).__name__}, weights present", ""
