import pytest
import yaml

from lmmreg.config import ConfigError, load_params, parse_params, stable_hash
from tests.conftest import REPO, load_raw_params, small_raw_params


def test_project_params_load():
    p = load_params(REPO / "params.yaml")
    assert p.alpha == pytest.approx(1e-2)
    assert p.train.epochs == 100 and p.train.batch_size == 64 and p.train.lr == pytest.approx(1e-4)
    assert p.datasets == ["demo"] and p.source("demo").layout == "demo"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("train.lr", "1e-4", "train.lr: expected float, got str '1e-4' (YAML reads 1e-4 as a string"),
        ("train.epochs", 1.5, "train.epochs: expected int"),
        ("alpha", -0.1, "alpha: must be >= 0"),
        ("datasets", [], "datasets: empty"),
        ("datasets", ["nope"], "datasets: 'nope' has no entry under sources"),
        ("train.optimizer", "adamw", "train.optimizer: expected one of ['adam', 'sgd']"),
        ("clip.unlocked_groups", 3, "clip.unlocked_groups: expected one of [1, 2]"),
        ("train.methods", ["finetune", "finetune"], "train.methods: duplicates in ['finetune', 'finetune']"),
        ("train.methods", ["finetune", 3], "train.methods[1]: expected str, got int 3"),
        ("train.normalize", "yes", "train.normalize: expected bool"),
        ("seeds", [0, 0], "seeds: duplicates"),
        ("clip.augment_views", -1, "clip.augment_views: must be >= 0"),
        ("baselines.coop.n_ctx", 0, "baselines.coop.n_ctx: must be >= 1, got 0"),  # a nested section's own check
        ("pretrain.threads", 0, "pretrain.threads: must be >= 1"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError) as e:
        parse_params(small_raw_params(**{key: value}))
    assert message in str(e.value)


def test_unknown_and_missing_keys_are_named():
    raw = load_raw_params()
    raw["train"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"unknown key train\.learning_rate"):
        parse_params(raw)
    raw = load_raw_params()
    del raw["alpha"]
    with pytest.raises(ConfigError, match=r"missing key alpha"):
        parse_params(raw)
    raw = load_raw_params()
    raw["sources"]["demo"]["layuot"] = "demo"
    with pytest.raises(ConfigError, match=r"unknown key sources\.demo\.layuot"):
        parse_params(raw)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    raw = load_raw_params()
    raw["alpha"] = "0.1"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"{path}: alpha: expected float"):
        load_params(path)
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "missing.yaml")


def test_params_are_frozen_and_hash_stably():
    a, b = parse_params(small_raw_params()), parse_params(small_raw_params())
    assert stable_hash(a) == stable_hash(b)
    assert stable_hash(a) != stable_hash(parse_params(small_raw_params(alpha=0.5)))
    with pytest.raises(AttributeError):
        a.alpha = 1.0  # type: ignore[misc]


def test_paper_setting_is_a_parameter_change_only():
    """configs/paper.yaml is the demo's params.yaml with the documented keys switched, nothing else."""
    from lmmreg.config import to_dict
    from lmmreg.report import is_demo

    demo, paper = load_params(REPO / "params.yaml"), load_params(REPO / "configs/paper.yaml")
    assert paper.datasets == ["ucf101", "era", "bar"]
    assert (paper.clip.model, paper.clip.pretrained) == ("ViT-L-14-quickgelu", "openai")
    assert paper.describe.backend == "openai" and paper.describe.options["base_url"].startswith("http://")
    assert not is_demo(paper) and is_demo(demo)

    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    a, b = flat(to_dict(demo)), flat(to_dict(paper))
    changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    assert changed == ["clip.model", "clip.pretrained", "datasets", "describe.backend", "describe.model",
                       "describe.options.base_url", "describe.options.concurrency", "describe.options.noise",
                       "pretrain.enabled"]
