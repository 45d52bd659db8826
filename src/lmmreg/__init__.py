"""lmmreg: LMM-regularised CLIP embeddings (Tzelepi & Mezaris, ISM 2024), reproduced with DVC and MLflow.

The library modules are nouns (config, data, describe, clip, artifacts, losses, engine, methods,
stats, tracking, report); the pipeline steps live in :mod:`lmmreg.stages`, one module per `dvc.yaml` stage.
"""

__version__ = "0.1.0"
