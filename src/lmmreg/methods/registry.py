"""The methods by name: what each reads and which settings its result depends on, imported only when it runs.

Like `lmmreg.describe.backends` (and timm's name -> entry point table), this module imports no torch: the plan
and report stages, the config check and the doctor read the declarations here and never load a method's code.
`load(name)` imports the method's module when a train stage runs it.

A method is a function `name(inp: MethodInputs, ctx: RunContext) -> FitResult` in the module its entry names.
Adding a method is adding its module, its line below and its test.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What a method may read (the fields of lmmreg.methods.base.MethodInputs; a test checks they agree).
INPUTS = frozenset({"tail", "train_feat", "test_feat", "train_y", "test_y", "centroids", "class_text",
                    "train_text_mean", "test_text_mean", "train_aug", "classnames", "clip_model", "tokenizer",
                    "logit_scale", "val_feat", "val_y", "reg_target", "train_desc"})
# Inputs that come from the LMM's descriptions: a method that reads one depends on the describe settings.
LMM_INPUTS = frozenset({"centroids", "train_text_mean", "test_text_mean", "train_desc"})
# The settings of a baseline that searches on a validation split, and of one that uses CLIP's logit scale.
SEARCH_SETTINGS = ("baselines.val_fraction", "baselines.val_rule")
SCALE_SETTINGS = ("baselines.logit_scale",)
IMAGE = frozenset({"tail", "train_feat", "test_feat", "train_y", "test_y"})


@dataclass(frozen=True)
class MethodEntry:
    """A method and what it declares about itself."""

    name: str
    module: str  # under lmmreg.methods (lmmreg.plan.code_digest adds every one to the train stage's code)
    needs: frozenset[str]  # MethodInputs fields it reads (checked before it runs)
    # Params sections its result depends on besides data and CLIP ("train", "baselines.gda", ...): its identity.
    settings: tuple[str, ...] = ()
    # The α of J = J_ce + α J_reg it trains with: "param" reads params.alpha (lmm_reg), a number is fixed
    # (finetune: 0), None: the method has no such α. Logged (numerically) only where it is not None.
    alpha: float | str | None = None
    function: str = ""  # its function in `module` ("" = the method's name)

    @property
    def trains(self) -> bool:
        return bool(self.settings)

    @property
    def engine_trained(self) -> bool:
        """Trained by lmmreg.engine with the `train:` section (the paper's methods), not a baseline's recipe."""
        return "train" in self.settings

    @property
    def reads_alpha(self) -> bool:
        return self.alpha == "param"

    @property
    def uses_lmm(self) -> bool:
        return bool(self.needs & LMM_INPUTS) or self.reads_alpha

    @property
    def uses_class_prompt(self) -> bool:
        """Reads the class-prompt embeddings, so `clip.class_prompt` is part of its identity."""
        return "class_text" in self.needs

    def alpha_value(self, alpha: float) -> float | None:
        """The α this method trains with when params say `alpha`."""
        return alpha if self.reads_alpha else self.alpha

    def load(self) -> Callable[..., Any]:
        return getattr(importlib.import_module(self.module_name), self.function or self.name)

    @property
    def module_name(self) -> str:
        return f"lmmreg.methods.{self.module}"


def _entry(name: str, module: str, needs: frozenset[str] | set[str], settings: tuple[str, ...] = (),
           alpha: float | str | None = None, function: str = "") -> MethodEntry:
    unknown = set(needs) - INPUTS
    if unknown:
        raise ValueError(f"method {name!r}: needs unknown inputs {sorted(unknown)}")
    return MethodEntry(name, module, frozenset(needs), tuple(settings), alpha, function)


_BASELINE = (*SEARCH_SETTINGS, *SCALE_SETTINGS)
METHODS: dict[str, MethodEntry] = {e.name: e for e in (
    _entry("zero_shot", "zero_shot", {"tail", "test_feat", "test_y", "class_text"}),
    _entry("zero_shot_lmm", "zero_shot", {"tail", "test_feat", "test_y", "centroids"}),
    _entry("linear_probe", "linear", IMAGE, ("train",)),
    _entry("concat", "linear", IMAGE | {"train_text_mean", "test_text_mean"}, ("train",)),
    # the paper's baseline is the proposed method's code path at α = 0
    _entry("finetune", "lmm_reg", IMAGE, ("train",), alpha=0.0, function="lmm_reg"),
    _entry("lmm_reg", "lmm_reg", IMAGE | {"centroids"}, ("train",), alpha="param"),
    _entry("prolip", "prolip", IMAGE | {"class_text"}, ("baselines.prolip", *_BASELINE)),
    _entry("gda", "gda", IMAGE | {"class_text"}, ("baselines.gda", *_BASELINE)),
    _entry("tip_adapter", "tip_adapter", IMAGE | {"class_text"}, ("baselines.tip_adapter", *_BASELINE)),
    _entry("tip_adapter_f", "tip_adapter", IMAGE | {"class_text"},
           ("baselines.tip_adapter", *_BASELINE)),
    _entry("clip_adapter", "clip_adapter", IMAGE | {"class_text"}, ("baselines.clip_adapter",)),
    _entry("coop", "coop", IMAGE | {"classnames", "clip_model", "tokenizer"}, ("baselines.coop",)),
    _entry("linear_probe_lbfgs", "linear_probe_lbfgs", IMAGE,
           ("baselines.linear_probe_lbfgs", *SEARCH_SETTINGS)),
    _entry("lp_pp", "lp_pp", IMAGE | {"class_text"}, ("baselines.lp_pp", *SEARCH_SETTINGS)),
    _entry("clap", "clap", IMAGE | {"class_text"}, ("baselines.clap",)),  # needs no validation set
    _entry("cross_modal", "cross_modal", IMAGE | {"class_text"}, ("baselines.cross_modal", *_BASELINE)),
    # the same probe with the LMM's descriptions of the training images as its text samples
    _entry("cross_modal_lmm", "cross_modal", IMAGE | {"train_desc"},
           ("baselines.cross_modal", *_BASELINE)),
)}


def method_modules() -> list[str]:
    """Every method's module: code that only the train stage runs (plan and report read this table alone)."""
    return sorted({e.module_name for e in METHODS.values()})


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def check_methods(names: list[str]) -> None:
    """`train.methods` against the registry, named as the config key (the plan stage checks it first: config.py
    does not import this table, or every stage would depend on every method's code through it)."""
    from lmmreg.config import ConfigError

    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise ConfigError(f"train.methods: unknown method {unknown[0]!r} (known: {', '.join(METHODS)})")


def get_method(name: str) -> MethodEntry:
    if name not in METHODS:
        raise ValueError(f"train.methods: unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]
