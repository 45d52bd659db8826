"""The trained classifier as one deployable model: images in, class names out.

    CLIP image tower up to the cached boundary (frozen)  ->  trained tail (visual.proj; + last block and
    ln_post for clip.unlocked_groups 2)  ->  head (the trained linear layer, or the fixed class vectors of
    the zero-shot methods)

The train stage saves it to a folder (`save_classifier`) and logs that folder as an MLflow pyfunc model
(`PyfuncClassifier`; registered as `lmmreg-<dataset>`, alias `champion`):

    import mlflow
    model = mlflow.pyfunc.load_model("models:/lmmreg-demo@champion")
    model.predict(["data/raw/demo/test/x.png", rgb_array_h_w_3])   # -> ["circle", "square"]

What the folder holds depends on where CLIP's weights come from (docs/tracking.md):
- an open_clip pretrained tag (`openai`, the paper): only the trainable part; the loader rebuilds CLIP from
  the name and tag through open_clip's cache, as the pipeline does, so the 1.7 GB tower is not copied per run;
- random init (the demo, a few MB): the image tower's weights too (`visual.pt`), so the model stands alone;
- a local checkpoint file: its absolute path and sha256; the loader refuses a missing or different file.
`concat` cannot be served: it needs the LMM's descriptions of each new image.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmmreg.clip.build import build_clip
from lmmreg.clip.vision import VisionTail, encode_boundary
from lmmreg.config import ClipConfig
from lmmreg.heads import CosineHead
from lmmreg.tracking import quiet_model_logging

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported: no network lookup

with quiet_model_logging():  # importing pyfunc runs MLflow's own `Any` type-hint checks (mlflow.types.responses)
    import mlflow.pyfunc  # noqa: E402  (the pyfunc base class below)

log = logging.getLogger(__name__)

SERVABLE = ("zero_shot", "zero_shot_lmm", "linear_probe", "finetune", "lmm_reg")
SPEC, TRAINABLE, VISUAL = "spec.json", "trainable.pt", "visual.pt"


class ImageClassifier(nn.Module):
    """images [B, 3, H, W] (CLIP-preprocessed) -> logits [B, C]."""

    def __init__(self, visual: nn.Module, tail: nn.Module, head: nn.Module, unlocked_groups: int):
        super().__init__()
        self.visual, self.tail, self.head, self.unlocked_groups = visual, tail, head, unlocked_groups

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cached = encode_boundary(self.visual, images, self.unlocked_groups)  # what features.py caches
        return self.head(self.tail(cached))


def build_trainable(method: str, *, state_dict: dict[str, torch.Tensor] | None, base_tail: VisionTail,
                    class_text: torch.Tensor, centroids: torch.Tensor) -> dict:
    """The part of `method`'s classifier that is not CLIP: {"tail": state, "head": {"kind", tensors}}.

    `state_dict` is the method's trained `EmbeddingClassifier` state (None for zero-shot); linear probe trains
    only the head, on the untouched tail.
    """
    if method not in SERVABLE:
        raise ValueError(f"method {method!r} cannot classify images alone (servable: {', '.join(SERVABLE)})")
    tail = {k: v.detach().cpu().clone() for k, v in base_tail.state_dict().items()}
    if method in ("zero_shot", "zero_shot_lmm"):
        weight = class_text if method == "zero_shot" else centroids
        return {"tail": tail, "head": {"kind": "cosine", "weight": weight.detach().cpu().clone()}}
    if not state_dict:
        raise ValueError(f"method {method!r}: no trained state to build the classifier from")
    if method in ("finetune", "lmm_reg"):
        tail = {k.removeprefix("tail."): v for k, v in state_dict.items() if k.startswith("tail.")}
    return {"tail": tail, "head": {"kind": "linear", "weight": state_dict["head.weight"],
                                   "bias": state_dict["head.bias"]}}


def save_classifier(folder: Path, *, clip: ClipConfig, visual: nn.Module, trainable: dict, classes: list[str],
                    meta: dict) -> Path:
    """Write the model folder: spec.json (how to rebuild CLIP, classes, preprocessing), trainable.pt, and
    visual.pt only when CLIP is randomly initialised (see the module docstring)."""
    from lmmreg.data.manifest import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    spec = {"clip": {"model": clip.model, "pretrained": clip.pretrained, "init_seed": clip.init_seed,
                     "unlocked_groups": clip.unlocked_groups},
            "classes": list(classes), "preprocess": dict(visual.preprocess_cfg), **meta}
    if not clip.pretrained:
        spec["weights"] = "visual.pt"
        torch.save(visual.state_dict(), folder / VISUAL)
    elif Path(clip.pretrained).expanduser().is_file():
        path = Path(clip.pretrained).expanduser().resolve()
        spec["weights"] = "checkpoint"
        spec["clip"]["pretrained"] = str(path)
        spec["checkpoint_sha256"] = sha256_file(path)
    else:
        spec["weights"] = "open_clip"
    torch.save(trainable, folder / TRAINABLE)
    (folder / SPEC).write_text(json.dumps(spec, indent=1) + "\n")
    return folder


def load_classifier(folder: str | Path) -> tuple[ImageClassifier, Any, list[str]]:
    """(model in eval mode, preprocessing transform, class names) from a `save_classifier` folder."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from lmmreg.clip.arch import register_model_configs
    from lmmreg.data.manifest import sha256_file

    folder = Path(folder)
    spec = json.loads((folder / SPEC).read_text())
    cfg = ClipConfig(model=spec["clip"]["model"], pretrained=spec["clip"]["pretrained"],
                     init_seed=spec["clip"]["init_seed"], unlocked_groups=spec["clip"]["unlocked_groups"])
    if spec["weights"] == "visual.pt":
        register_model_configs()
        logging.disable(logging.WARNING)  # open_clip warns "initialized randomly": the weights are loaded next
        try:
            visual = open_clip.create_model(cfg.model, pretrained=None).visual
        finally:
            logging.disable(logging.NOTSET)
        visual.load_state_dict(torch.load(folder / VISUAL, map_location="cpu", weights_only=True))
    else:
        if spec["weights"] == "checkpoint":
            path = Path(cfg.pretrained)
            if not path.is_file() or sha256_file(path) != spec["checkpoint_sha256"]:
                raise FileNotFoundError(f"{folder / SPEC}: CLIP checkpoint {path} is missing or not the file the "
                                        f"model was trained with (sha256 {spec['checkpoint_sha256'][:12]}...)")
        visual = build_clip(cfg)[0].visual  # pretrained tag: open_clip's cache, or a clear error saying how to fetch
    trainable = torch.load(folder / TRAINABLE, map_location="cpu", weights_only=True)
    tail = VisionTail(visual, cfg.unlocked_groups)
    tail.load_state_dict(trainable["tail"])
    h = trainable["head"]
    if h["kind"] == "cosine":
        head: nn.Module = CosineHead(h["weight"])
    else:
        head = nn.Linear(h["weight"].shape[1], h["weight"].shape[0])
        head.load_state_dict({"weight": h["weight"], "bias": h["bias"]})
    model = ImageClassifier(visual, tail, head, cfg.unlocked_groups).eval()
    transform = image_transform_v2(PreprocessCfg(**spec["preprocess"]), is_train=False)
    return model, transform, list(spec["classes"])


def to_image(item: Any):
    """An image path, a PIL image, or an array / nested list [H, W, 3] (or [H, W]) of uint8 -> RGB PIL image."""
    from PIL import Image

    from lmmreg.data.images import load_rgb, to_rgb

    if isinstance(item, (str, Path)):
        return load_rgb(Path(item))
    if isinstance(item, Image.Image):
        return to_rgb(item)
    arr = np.asarray(item)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image array: expected [H, W], [H, W, 3] or [H, W, 4], got shape {list(arr.shape)}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"image array: values must lie in 0..255, got {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint8)
    return to_rgb(Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[2] == 1 else arr))


@torch.inference_mode()
def predict_images(model: ImageClassifier, transform, classes: list[str], images: Sequence[Any], *,
                   batch_size: int = 64) -> list[str]:
    out: list[str] = []
    for i in range(0, len(images), batch_size):
        batch = torch.stack([transform(to_image(x)) for x in images[i:i + batch_size]])  # [B, 3, H, W]
        out += [classes[k] for k in model(batch).argmax(dim=-1).tolist()]
    return out


with quiet_model_logging():  # MLflow checks the predict type hints here: `list[Any]` is meant
    class PyfuncClassifier(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc wrapper: `predict(list of image paths or [H, W, 3] uint8 arrays) -> list of class names`.

        The signature comes from the type hints (a list of anything: paths and arrays are both valid rows).
        Served: `POST /invocations {"inputs": ["/path/a.png", [[[0, 0, 0], ...]]]}` -> {"predictions": [...]}.
        """

        def load_context(self, context) -> None:
            self.model, self.transform, self.classes = load_classifier(context.artifacts["classifier"])

        def predict(self, model_input: list[Any], params: dict[str, Any] | None = None) -> list[str]:
            return predict_images(self.model, self.transform, self.classes, list(model_input))
