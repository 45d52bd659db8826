"""The describe setting hash: which answers in the store belong to the current configuration.

Kept apart from the backends so that stages needing only the hash (embed_text, train, report) do not
depend on, and are not re-run by edits to, backend code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lmmreg.config import DescribeConfig, stable_hash

# Option keys that never enter the setting hash: they say where or how fast to run, not what to ask
# (secrets' names, machine-local addresses, throughput knobs). Changing them re-uses stored answers.
UNHASHED_OPTIONS = {"api_key_env", "concurrency", "timeout_s", "max_retries", "batch_size", "device",
                    "base_url", "dtype", "attn_implementation", "gpu_id", "retry_base_s", "retry_max_wait_s",
                    "max_connect_failures"}
# The describe settings that change answers, as params.yaml names them under `describe:`: logged with every run
# (lmmreg.run_metadata), and dvc.yaml's plan and report stages list them as params (a test checks they agree).
DESCRIBE_KEYS = ("backend", "model", "prompt", "n_descriptions", "temperature", "top_p", "max_new_tokens",
                 "repetition_penalty", "seed", "on_too_few", "too_few_retries")


def setting_hash(cfg: DescribeConfig) -> str:
    """Identifies one describe setting (backend, model, prompt, generation settings): the store key.

    For the `file` backend the imported file (`describe.import_file`) and its content are part of the setting
    (when it exists), so importing a corrected file replaces the old answers instead of silently reusing them;
    other backends ignore that key, so its placeholder never changes their hash."""
    options = {k: v for k, v in cfg.options.items() if k not in UNHASHED_OPTIONS}
    if cfg.backend == "file":
        options["path"] = cfg.import_file  # where it sat when it was an option: the hash of old stores holds
        if Path(cfg.import_file).is_file():
            options["_content_sha256"] = hashlib.sha256(Path(cfg.import_file).read_bytes()).hexdigest()
    return stable_hash({
        "backend": cfg.backend, "model": cfg.model, "prompt": cfg.prompt, "n": cfg.n_descriptions,
        "temperature": cfg.temperature, "top_p": cfg.top_p, "max_new_tokens": cfg.max_new_tokens,
        "repetition_penalty": cfg.repetition_penalty, "seed": cfg.seed, "options": options,
    })


def answers_identity(cfg: DescribeConfig) -> list:
    """What decides which answers a run's descriptions are: the stored answers' setting (`setting_hash`) and what
    is done with an answer that has too few descriptions (`on_too_few`, `too_few_retries`)."""
    return [setting_hash(cfg), cfg.on_too_few, cfg.too_few_retries]
