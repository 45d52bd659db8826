"""Logging a pyfunc model: the pinned requirements, and the MLflow notices a user cannot act on."""

from __future__ import annotations

import contextlib
import logging


class _DropRecords(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


# What MLflow says on every pyfunc model it logs that a user of this project cannot act on: the classifier is a
# Python object by design (cloudpickled), its input is image paths or arrays (`list[Any]`), its requirements are
# pinned explicitly (the pip version does not matter), the signature comes from the input example, and in a uv
# project (this one) MLflow copies uv.lock and pyproject.toml into the model's artifacts, three lines per model.
_MODEL_NOISE = {
    "mlflow.pyfunc": ("Passing a Python object as `python_model` causes it to be serialized using CloudPickle",),
    "mlflow.utils.environment": ("Failed to resolve installed pip version",),
    "mlflow.models.signature": ("Running the predict function to generate output based on input example",),
    "mlflow.utils.uv_utils": ("Detected uv project", "Copied uv.lock to model artifacts",
                              "Copied pyproject.toml to model artifacts"),
}

@contextlib.contextmanager
def drop_records(noise: dict[str, tuple[str, ...]]):
    """Drop exactly the records of `noise` (logger name -> message prefixes) while the block runs."""
    loggers = [(logging.getLogger(name), _DropRecords(msgs)) for name, msgs in noise.items()]
    for lg, flt in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg, flt in loggers:
            lg.removeFilter(flt)


@contextlib.contextmanager
def quiet_model_logging():
    """Silence exactly MLflow's notices above (and its `Any` type-hint UserWarning) while a model is defined or
    logged; every other warning passes."""
    import warnings

    # MLflow wraps its type-hint checks in its own `simplefilter("once")`, which outranks a filter set here; so the
    # one warning is dropped where it would be shown, for the duration of the block only.
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if "Any type hint is inferred as AnyType" not in str(message):
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        with drop_records(_MODEL_NOISE):
            yield
    finally:
        warnings.showwarning = shown


def model_requirements() -> list[str]:
    """Pinned pip requirements of a logged model, from the installed versions (never inferred: see log_model)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("mlflow", "torch", "torchvision", "open_clip_torch", "numpy", "pillow", "pyyaml"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs
