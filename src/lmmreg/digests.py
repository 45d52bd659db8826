"""Content digests of the train stage's inputs, without torch: what the plan stage writes into each plan.

An artifact (lmmreg.artifacts, a `torch.save` zip archive) is digested by its ids and by the dtype, shape and bytes
of its labels and tensors, not by its meta (provenance): the class-prompt embeddings record the describe setting
they were written beside, which does not change them. The archive's pickle is read by a restricted unpickler that
knows only how torch rebuilds a tensor (`torch._utils._rebuild_tensor_v2` over a storage named by key), so nothing
in the file can run code, and the plan stage needs no torch (~2 s of imports, and the stage that decides what
re-trains stays light).
"""

from __future__ import annotations

import collections
import hashlib
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmmreg.errors import InputError

# torch's storage classes by name -> (the dtype as torch prints it, bytes per element)
_STORAGES = {"FloatStorage": ("torch.float32", 4), "DoubleStorage": ("torch.float64", 8),
             "HalfStorage": ("torch.float16", 2), "BFloat16Storage": ("torch.bfloat16", 2),
             "LongStorage": ("torch.int64", 8), "IntStorage": ("torch.int32", 4), "ShortStorage": ("torch.int16", 2),
             "CharStorage": ("torch.int8", 1), "ByteStorage": ("torch.uint8", 1), "BoolStorage": ("torch.bool", 1)}


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    itemsize: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, offset: int, shape, stride, *_) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(shape), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Only what an artifact's pickle holds: dicts, lists, strings and numbers, tensors by reference."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGES:
            return name
        raise pickle.UnpicklingError(f"{module}.{name} is not part of an artifact")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage, key, _location, _numel = pid
        if kind != "storage" or storage not in _STORAGES:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return _Storage(str(key), *_STORAGES[storage])


def _contiguous_bytes(z: zipfile.ZipFile, prefix: str, t: _Tensor, cache: dict[str, bytes]) -> bytes:
    n = 1
    for d in t.shape:
        n *= d
    expect, step = [], 1
    for d in reversed(t.shape):
        expect.append(step)
        step *= d
    if n and tuple(reversed(expect)) != t.stride and any(d > 1 for d in t.shape):
        raise InputError(f"a non-contiguous tensor in an artifact (stride {t.stride} for shape {t.shape})")
    if t.storage.key not in cache:
        cache[t.storage.key] = z.read(f"{prefix}/data/{t.storage.key}")
    start = t.offset * t.storage.itemsize
    return cache[t.storage.key][start:start + n * t.storage.itemsize]


def artifact_digest(path: Path) -> str:
    """sha256 of an artifact's ids, labels and tensors (not its meta)."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
            prefix = pkl[: -len("/data.pkl")]
            blob = _Unpickler(z.open(pkl)).load()
            h = hashlib.sha256(json.dumps(list(blob["ids"])).encode())
            cache: dict[str, bytes] = {}
            for name, t in [("labels", blob["labels"]), *sorted(blob["tensors"].items())]:
                h.update(f"{name}:{t.storage.dtype}:{t.shape}".encode())
                h.update(_contiguous_bytes(z, prefix, t, cache))
    except (zipfile.BadZipFile, StopIteration, KeyError, pickle.UnpicklingError, EOFError, OSError) as e:
        raise InputError(f"{path}: not a readable artifact ({type(e).__name__}: {e}); re-run the stage that writes "
                         "it (`dvc repro`)") from None
    return h.hexdigest()
