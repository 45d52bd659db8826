"""The `transformers` backend on a tiny randomly initialised LLaVA (CLIP vision tower + Llama) built from
configs, with a small word-level tokenizer made here, loaded back through AutoProcessor /
AutoModelForImageTextToText and run through the real processor, chat template and `generate`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmmreg.config import ConfigError
from lmmreg.describe.backends import build_describer
from lmmreg.describe.base import DescribeItem
from lmmreg.stages import describe as stage
from tests.test_describe_stage import make_dataset, make_params, read_jsonl

WORDS = ("a the red blue green yellow dog cat car sky grass photo of image shows in on with and . , "
         "give semantic descriptions for user assistant : 1 2 3 4 5").split()
SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}"
            "<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
            "{% if add_generation_prompt %}assistant : {% endif %}")


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    out = tmp_path_factory.mktemp("tiny-llava")
    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    # 16 px images, 8 px patches: 4 patch tokens + CLS, "default" strategy drops CLS -> 4 <image> tokens.
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16},
                                                                  crop_size={"height": 16, "width": 16}),
                               tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=16, patch_size=8, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                bos_token_id=2, eos_token_id=3, pad_token_id=1),
        image_token_index=vocab["<image>"], vision_feature_select_strategy="default", vision_feature_layer=-1,
        image_seq_length=4)
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_batched_greedy_equals_one_by_one(tiny_vlm, tmp_path):
    params, paths = make_dataset(tmp_path, backend="transformers", model=str(tiny_vlm), temperature=0.0,
                                 max_new_tokens=10, options={"device": "cpu", "batch_size": 4})
    describer = build_describer(params.describe, raw_root=paths["raw"])
    assert type(describer.model).__name__ == "LlavaForConditionalGeneration"
    images = sorted(Path(paths["raw"]).rglob("*.png"))[:4]
    items = [DescribeItem(p.name, p, f"{i:064x}") for i, p in enumerate(images)]
    batched = describer.describe_batch(items)  # left-padded: the demo images differ, the prompts do not
    single = [describer.describe_batch([it])[0] for it in items]
    assert [a.raw for a in batched] == [a.raw for a in single]
    assert len({a.raw for a in batched}) > 1  # the image reaches the model: answers differ
    for a in batched:
        assert a.error is None and 1 <= a.completion_tokens <= 10 and a.prompt_tokens > 4
        assert a.truncated == (a.completion_tokens == 10 and "</s>" not in a.raw)
        assert set(a.raw.split()) <= set(WORDS)  # special tokens stripped, only real words


def test_sampling_is_seeded(tiny_vlm, tmp_path):
    params, paths = make_dataset(tmp_path, backend="transformers", model=str(tiny_vlm), max_new_tokens=12,
                                 options={"device": "cpu"})
    describer = build_describer(params.describe, raw_root=paths["raw"])
    image = next(Path(paths["raw"]).rglob("*.png"))
    a = describer.describe_batch([DescribeItem("x", image, "ab" * 32)])[0].raw
    assert describer.describe_batch([DescribeItem("x", image, "ab" * 32)])[0].raw == a
    others = {describer.describe_batch([DescribeItem("x", image, "ab" * 32, attempt=k)])[0].raw for k in range(1, 4)}
    assert others - {a}  # a retry (new attempt) samples a different answer


def test_stage_runs_on_a_local_model_directory(tiny_vlm, tmp_path):
    params, paths = make_dataset(tmp_path, backend="transformers", model=str(tiny_vlm), temperature=0.0,
                                 max_new_tokens=12, options={"device": "cpu", "batch_size": 3})
    try:
        stage.main(params, **paths)
    except ValueError as e:  # a random model may say nothing usable for an image: that must be an error record
        assert "empty answer" in str(e)
    records = read_jsonl(paths["store"])
    assert len({r["sha256"] for r in records}) == len(records) == 10
    for r in records:
        assert r["backend"] == "transformers" and r["completion_tokens"] >= 1
        assert bool(r["error"]) == (not r["descriptions"])
    good = {r["sha256"] for r in records if not r["error"]}
    assert good and {r["sha256"] for r in read_jsonl(paths["out"])} == good


def test_bad_model_dir_names_the_key(tmp_path):
    params = make_params(backend="transformers", model=str(tmp_path / "nope"), options={"device": "cpu"})
    with pytest.raises(ConfigError, match="describe.model: cannot load"):
        build_describer(params.describe, raw_root=tmp_path)
