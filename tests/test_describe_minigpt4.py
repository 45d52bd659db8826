"""The `minigpt4` adapter against a stand-in checkout: a `minigpt4` package with the official layout and the
same `Config` / `registry` / `Chat` API (upload_img, encode_img, ask, answer) that `demo.py` uses, backed
by a toy model. The adapter under test is the real one."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lmmreg.config import ConfigError
from lmmreg.stages import describe as stage
from tests.test_describe_stage import make_dataset, make_params, read_jsonl

FILES = {
    "minigpt4/__init__.py": """
        import minigpt4.models  # noqa: F401  registration, like the real package's __init__
        import minigpt4.processors  # noqa: F401
    """,
    "minigpt4/common/__init__.py": "",
    "minigpt4/common/registry.py": """
        class Registry:
            mapping = {"model": {}, "processor": {}}
            def register_model(self, name):
                def wrap(cls):
                    self.mapping["model"][name] = cls
                    return cls
                return wrap
            def register_processor(self, name):
                def wrap(cls):
                    self.mapping["processor"][name] = cls
                    return cls
                return wrap
            def get_model_class(self, name):
                return self.mapping["model"].get(name)
            def get_processor_class(self, name):
                return self.mapping["processor"].get(name)
        registry = Registry()
    """,
    "minigpt4/common/config.py": """
        import yaml
        from types import SimpleNamespace

        def _ns(d):
            return SimpleNamespace(**{k: _ns(v) for k, v in d.items()}) if isinstance(d, dict) else d

        class Config:
            def __init__(self, args):
                raw = yaml.safe_load(open(args.cfg_path))
                for opt in args.options or []:  # "a.b=c", like OmegaConf.from_dotlist
                    dotted, value = opt.split("=", 1)
                    *parents, leaf = dotted.split(".")
                    node = raw
                    for p in parents:
                        node = node.setdefault(p, {})
                    node[leaf] = value
                self.config = _ns(raw)
            @property
            def model_cfg(self):
                return self.config.model
            @property
            def datasets_cfg(self):
                return self.config.datasets
            @property
            def run_cfg(self):
                return self.config.run
    """,
    "minigpt4/models/__init__.py": """
        import torch
        from minigpt4.common.registry import registry

        @registry.register_model("mini_gpt4")
        class ToyMiniGPT4(torch.nn.Module):
            loaded = []
            def __init__(self, ckpt):
                super().__init__()
                self.ckpt = ckpt
                ToyMiniGPT4.loaded.append(self)
            @classmethod
            def from_config(cls, cfg):
                return cls(cfg.ckpt)
            def encode_img(self, image):  # [1, 3, H, W] -> ([1, 1, 3] "embedding", atts)
                return image.mean(dim=(2, 3)).unsqueeze(1), None
    """,
    "minigpt4/processors/__init__.py": """
        import numpy as np
        import torch
        from minigpt4.common.registry import registry

        @registry.register_processor("blip2_image_eval")
        class Blip2ImageEvalProcessor:
            @classmethod
            def from_config(cls, cfg):
                return cls()
            def __call__(self, image):  # PIL -> [3, H, W]
                return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    """,
    "minigpt4/conversation/__init__.py": "",
    "minigpt4/conversation/conversation.py": """
        import dataclasses
        from typing import Any, List
        import torch
        from PIL import Image
        from transformers import StoppingCriteria

        @dataclasses.dataclass
        class Conversation:
            system: str
            roles: List[str]
            messages: List[List[str]]
            offset: int
            sep: str = "###"
            def get_prompt(self):
                ret = self.system + self.sep
                for role, message in self.messages:
                    ret += role + ": " + message + self.sep if message else role + ":"
                return ret
            def append_message(self, role, message):
                self.messages.append([role, message])
            def copy(self):
                return Conversation(self.system, self.roles, [[x, y] for x, y in self.messages], self.offset, self.sep)

        CONV_VISION_Vicuna0 = Conversation("Give the following image: <Img>ImageContent</Img>. ",
                                           ("Human", "Assistant"), [], 2)
        CONV_VISION_LLama2 = Conversation("Give the following image. ", ("<s>[INST] ", " [/INST] "), [], 2, "")

        class StoppingCriteriaSub(StoppingCriteria):
            def __init__(self, stops=[], encounters=1):
                super().__init__()
                self.stops = stops
            def __call__(self, input_ids, scores):
                return any(torch.all(stop == input_ids[0][-len(stop):]).item() for stop in self.stops)

        class Chat:
            def __init__(self, model, vis_processor, device="cuda:0", stopping_criteria=None):
                self.model, self.vis_processor, self.device = model, vis_processor, device
                assert stopping_criteria is not None
                self.stopping_criteria = stopping_criteria
            def ask(self, text, conv):
                last = conv.messages[-1] if conv.messages else None
                if last is not None and last[0] == conv.roles[0] and last[1][-6:] == "</Img>":
                    conv.messages[-1][1] = " ".join([conv.messages[-1][1], text])
                else:
                    conv.append_message(conv.roles[0], text)
            def answer_prepare(self, conv, img_list, max_new_tokens=300, num_beams=1, min_length=1, top_p=0.9,
                               repetition_penalty=1.05, length_penalty=1, temperature=1.0, max_length=2000):
                conv.append_message(conv.roles[1], None)
                prompt = conv.get_prompt()
                assert prompt.count("<ImageHere>") == len(img_list) == 1, prompt
                assert all(isinstance(e, torch.Tensor) and e.dim() == 3 for e in img_list), "encode_img not called"
                return dict(prompt=prompt, emb=img_list[0], max_new_tokens=max_new_tokens, temperature=temperature)
            def answer(self, conv, img_list, **kargs):
                g = self.answer_prepare(conv, img_list, **kargs)
                r, gr, b = (g["emb"][0, 0] * 255).round().int().tolist()
                noise = torch.rand(1).item()  # sampling: must be seeded by the caller
                words = [f"{i}. Detail {i} of a scene coloured {r} {gr} {b}, draw {noise:.6f}." for i in range(1, 11)]
                text = ("\\n".join(words) + "###Human: more")[: 4 * g["max_new_tokens"]]
                output_text = text.split("###")[0].split("Assistant:")[-1].strip()
                conv.messages[-1][1] = output_text
                n_tokens = min(g["max_new_tokens"], len(text) // 4)
                return output_text, torch.zeros(n_tokens, dtype=torch.long).numpy()
            def upload_img(self, image, conv, img_list):
                conv.append_message(conv.roles[0], "<Img><ImageHere></Img>")
                img_list.append(image)
                return "Received."
            def encode_img(self, img_list):
                image = img_list.pop(0)
                if isinstance(image, Image.Image):
                    image = self.vis_processor(image).unsqueeze(0).to(self.device)
                image_emb, _ = self.model.encode_img(image)
                img_list.append(image_emb)
    """,
    "eval_configs/minigpt4_eval.yaml": """
        model:
          arch: mini_gpt4
          model_type: pretrain_vicuna0
          ckpt: please_set_in_options
        datasets:
          cc_sbu_align:
            vis_processor:
              train:
                name: blip2_image_eval
        run:
          task: image_text_pretrain
    """,
}


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    repo = tmp_path / "MiniGPT-4"
    for rel, text in FILES.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(textwrap.dedent(text))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the adapter adds the checkout; undo it afterwards
    yield repo
    for name in [m for m in sys.modules if m == "minigpt4" or m.startswith("minigpt4.")]:
        del sys.modules[name]


def test_stage_drives_the_chat_api(checkout, tmp_path):
    options = {"repo": str(checkout), "ckpt": str(tmp_path / "prerained_minigpt4_7b.pth"), "gpu_id": 0}
    params, paths = make_dataset(tmp_path, backend="minigpt4", model="minigpt4-vicuna7b", options=options)
    summary = stage.main(params, **paths)
    from minigpt4.models import ToyMiniGPT4

    assert [m.ckpt for m in ToyMiniGPT4.loaded] == [options["ckpt"]]  # the ckpt option reached the config
    assert summary["descriptions_per_image"] == {10: 10} and summary["completion_tokens"] > 0
    records = read_jsonl(paths["store"])
    # each answer is about its own image (the colour the toy model saw) and seeded per image
    draws = {r["descriptions"][0].split("draw ")[1] for r in records}
    assert len(draws) == 10
    again = make_dataset(tmp_path / "again", backend="minigpt4", model="minigpt4-vicuna7b", options=options)
    stage.main(again[0], **again[1])
    assert {r["sha256"]: r["raw"] for r in read_jsonl(again[1]["store"])} == {r["sha256"]: r["raw"] for r in records}


def test_token_limit_cuts_the_last_item(checkout, tmp_path):
    params, paths = make_dataset(tmp_path, backend="minigpt4", max_new_tokens=40, options={"repo": str(checkout)})
    stage.main(params, **paths)
    rec = read_jsonl(paths["store"])[0]
    assert rec["truncated"] and rec["cut_off"] and 1 <= len(rec["descriptions"]) < 10


def test_bad_checkout_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="describe.options.repo: .* has no minigpt4/"):
        from lmmreg.describe.backends import build_describer

        build_describer(make_params(backend="minigpt4", options={"repo": str(tmp_path)}).describe, raw_root=tmp_path)
