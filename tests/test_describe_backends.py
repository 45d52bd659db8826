"""Describer backends are looked up by name; the interface module imports none of them (no import circle)."""

import ast
import dataclasses
import importlib

import pytest

from lmmreg.config import ConfigError, DescribeConfig
from lmmreg.describe.backends import BACKENDS, build_describer
from tests.conftest import REPO


def test_every_configurable_backend_is_registered_and_resolves():
    import typing

    names = typing.get_args(typing.get_type_hints(DescribeConfig)["backend"])
    assert set(BACKENDS) == set(names)
    for name, (module, cls) in BACKENDS.items():
        backend = getattr(importlib.import_module(module), cls)
        assert callable(getattr(backend, "describe_batch", None)), name


def test_the_interface_imports_no_backend():
    tree = ast.parse((REPO / "src/lmmreg/describe/base.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not imported & {module for module, _ in BACKENDS.values()}


def test_unknown_backend_names_the_key(tmp_path):
    cfg = dataclasses.replace(DescribeConfig(), backend="nope")  # bypasses the Literal check on purpose
    with pytest.raises(ConfigError, match="describe.backend: unknown backend 'nope'"):
        build_describer(cfg, raw_root=tmp_path)
