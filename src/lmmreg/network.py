"""Whether this machine may and can reach a host: the offline switches, the host a download would connect to
first, and a TCP probe that answers in seconds. CLIP's weights (`lmmreg.clip.weights`) and doctor's DVC remote
check use it."""

from __future__ import annotations

import os

OFFLINE_ENVS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LMMREG_OFFLINE")


def offline() -> bool:
    """True when one of OFFLINE_ENVS is set to 1 / true / yes / on."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in OFFLINE_ENVS)


def weights_host(tag_cfg: dict) -> tuple[str, int]:
    """(host, port) a download of these weights would connect to first: the HTTPS proxy if one is set, else the
    hub (`HF_ENDPOINT`, default huggingface.co) or the URL's host."""
    from urllib.parse import urlsplit

    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(v)), "")
    if proxy:
        u = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return u.hostname or "", u.port or 3128
    if tag_cfg.get("hf_hub"):
        u = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    else:
        u = urlsplit(tag_cfg.get("url", ""))
    return u.hostname or "", u.port or (80 if u.scheme == "http" else 443)


def probe_host(host: str, port: int, timeout_s: float = 3.0) -> str | None:
    """None if a TCP connection to host:port opens within `timeout_s` (name lookup included), else why not.

    The hub client retries an unreachable host for about 90 s before it gives up; this says it in seconds."""
    import socket
    import threading

    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(None)
        except OSError as e:
            result.append(f"{type(e).__name__}: {e}")

    # getaddrinfo has no timeout of its own; a thread bounds a hanging name lookup too.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    return result[0] if result else f"no answer within {timeout_s:.0f} s"
