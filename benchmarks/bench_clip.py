"""CLIP speed on this machine: image features/s, texts/s, the fp32 (CPU) or bf16 (GPU) matmul ceiling measured
in the same run, a cached training epoch against an end-to-end epoch, a CoOp step (text tower every step) against
a cached step, and the peak memory of each part.

    PYTHONPATH=src python benchmarks/bench_clip.py [--out reports/benchmarks.md] [--quick]

Random weights cost exactly what pretrained ones do, so nothing is downloaded. CPU runs always; CUDA runs
too when present (bf16 autocast, large batches). Results go to `reports/benchmarks.md` (appended as one
section per run, with the machine description) and are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import io
import logging
import os
import platform
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from lmmreg.clip.build import build_clip
from lmmreg.clip.precision import autocast_for
from lmmreg.clip.text import embed_texts
from lmmreg.clip.vision import VisionTail, encode_boundary
from lmmreg.config import ClipConfig
from lmmreg.data.manifest import Record
from lmmreg.heads import EmbeddingClassifier
from lmmreg.stages.features import ManifestImages, extract_features

log = logging.getLogger("bench_clip")
# Datasheet dense bf16 peaks (TFLOP/s) for the MFU line; the measured matmul ceiling is reported beside it.
BF16_PEAK_TFLOPS = {"H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H200": 989.4,
                    "A100": 312.0, "RTX 3090": 71.0, "L4": 121.0}
WORDS = ("a person riding a bicycle along a mountain trail with trees sunlight crowd stadium water boat dog "
         "playing guitar on stage under bright lights while people watch smiling red blue green small large old "
         "young wooden table kitchen street city aerial view of flooded houses smoke fire car racing track").split()


class PeakMemory:
    """Peak resident memory of this process (sampled every 20 ms) and peak CUDA memory within a `with` block."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak_rss = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.rss())
            time.sleep(0.02)

    def __enter__(self):
        self.peak_rss = self.rss()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_cuda = torch.cuda.max_memory_allocated() if self.cuda else 0

    def text(self) -> str:
        gib = 2**30
        return f"RSS {self.peak_rss / gib:.2f} GiB" + (f", CUDA {self.peak_cuda / gib:.2f} GiB" if self.cuda else "")


def append_section(path: Path, head: str, text: str) -> None:
    """Append one run's section to a benchmark report, starting the file with `head` when it is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = "" if path.exists() else head
    with path.open("a") as f:
        f.write(start + text + "\n")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 1) -> float:
    """Best wall time of `repeats` calls (best-of filters out other load on a shared machine)."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_flops(device: str, *, size: int, repeats: int) -> tuple[float, str]:
    """Measured dense matmul ceiling: fp32 on CPU, bf16 on CUDA. Returns (FLOP/s, dtype)."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    inner = 20 if device.startswith("cuda") else 3
    a @ b

    def run():
        for _ in range(inner):
            a @ b

    return 2 * size**3 * inner / timed(run, device, repeats), str(dtype).removeprefix("torch.")


def count_flops(fn) -> int:
    """FLOPs of one call, counted by torch (matmuls, convolutions, attention). PyTorch's fused fast path for
    nn.MultiheadAttention hides its projections from the counter, so it is switched off while counting."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            fn()
        return counter.get_total_flops()
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def fake_descriptions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 30))) + "." for _ in range(n)]


def write_jpegs(root: Path, n: int, seed: int = 0) -> list[Record]:
    """n camera-sized JPEGs (320x240 .. 640x480, like UCF-101 frames and BAR photos)."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(n):
        h, w = (240, 320) if k % 2 else (480, 640)
        base = rng.integers(0, 255, (h // 16, w // 16, 3), dtype=np.uint8)  # smooth-ish content, realistic size
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        img.save(root / f"{k}.jpg", quality=90)
        records.append(Record(f"{k}.jpg", f"{k}.jpg", 0, "x", "train", "", w, h))
    return records


def bench_images(model, device: str, *, n: int, batch: int, ceiling: float) -> dict:
    size = model.visual.image_size[0]
    images = torch.randn(n, 3, size, size)
    autocast, precision = autocast_for(device)
    visual = model.visual
    if device.startswith("cuda"):
        visual = visual.to(memory_format=torch.channels_last)
    flops = count_flops(lambda: encode_boundary(model.visual, images[:1].to(device), 1)) + 0  # per image

    @torch.inference_mode()
    def run():
        for i in range(0, n, batch):
            x = images[i:i + batch].to(device, non_blocking=True)
            if device.startswith("cuda"):
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                encode_boundary(visual, x, 1)

    with torch.inference_mode():  # warm-up (kernels, allocator)
        with autocast:
            encode_boundary(visual, images[:min(batch, 2)].to(device), 1)
    with PeakMemory(device) as mem:
        secs = timed(run, device, repeats=2)
    rate = n / secs
    return {"img_s": rate, "gflop_img": flops / 1e9, "flops": rate * flops, "frac": rate * flops / ceiling,
            "precision": precision, "batch": batch, "n": n, "mem": mem.text()}


def bench_decode(n_images: int, workers: int, batch: int, size: int, preprocess) -> dict:
    """Decode + preprocess throughput of the features stage's DataLoader alone (no model)."""
    from torch.utils.data import DataLoader

    with tempfile.TemporaryDirectory() as tmp:
        records = write_jpegs(Path(tmp), n_images)
        data = ManifestImages(Path(tmp), records, preprocess)
        loader = DataLoader(data, batch_size=batch, num_workers=workers)

        def run():
            for _ in loader:
                pass

        secs = timed(run, "cpu", repeats=1)
    return {"img_s": n_images / secs, "workers": workers}


def bench_pipeline(model, preprocess, device: str, *, n_images: int, batch: int, workers: int) -> dict:
    """The features stage's own extraction loop, JPEG files to boundary features."""
    with tempfile.TemporaryDirectory() as tmp:
        records = write_jpegs(Path(tmp), n_images)
        logging.getLogger().setLevel(logging.WARNING)
        with PeakMemory(device) as mem, contextlib.redirect_stderr(io.StringIO()):
            secs = timed(lambda: extract_features(model, preprocess, Path(tmp), records, unlocked_groups=1,
                                                  batch_size=batch, workers=workers, device=device), device)
    return {"img_s": n_images / secs, "mem": mem.text()}


def bench_texts(model, tokenizer, device: str, *, n: int, batch: int, workers: int) -> dict:
    texts = fake_descriptions(n)
    embed_texts(model, tokenizer, texts[:batch], batch_size=batch, device=device, progress=False)  # warm-up
    out = {}
    with PeakMemory(device) as mem:
        for trim in (True, False):
            secs = timed(lambda t=trim: embed_texts(model, tokenizer, texts, batch_size=batch, device=device,
                                                    trim=t, progress=False, workers=workers), device)
            out["trim" if trim else "full"] = n / secs
    out.update(mem=mem.text(), n=n, batch=batch)
    return out


def bench_epochs(model, device: str, *, n: int, batch: int, n_classes: int = 10) -> dict:
    """One training epoch end to end (frozen encoder run every step) against one epoch on the boundary cache.

    Same images, labels, batch size, head and optimiser; only `proj` and the head train (unlocked_groups=1).
    The end-to-end epoch is given pre-decoded tensors, so the speed-up is not inflated by JPEG decoding.
    """
    size = model.visual.image_size[0]
    images = torch.randn(n, 3, size, size)
    labels = torch.randint(0, n_classes, (n,))
    dim = model.visual.output_dim
    autocast, _ = autocast_for(device)

    full = copy.deepcopy(model).to(device)
    full.lock_image_tower(unlocked_groups=1)
    head = torch.nn.Linear(dim, n_classes).to(device)
    params = [p for p in full.visual.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-4)

    def e2e_epoch():
        for i in range(0, n, batch):
            x, y = images[i:i + batch].to(device), labels[i:i + batch].to(device)
            with autocast:
                loss = F.cross_entropy(head(full.encode_image(x)).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    with torch.inference_mode(), autocast:
        cache = torch.cat([encode_boundary(model.visual, images[i:i + batch].to(device), 1).float()
                           for i in range(0, n, batch)])
    cache = cache.clone()
    clf = EmbeddingClassifier(VisionTail(model.visual, 1), dim, n_classes).to(device)
    opt2 = torch.optim.Adam(clf.parameters(), lr=1e-4)
    labels_d = labels.to(device)

    def cached_epoch():
        for i in range(0, n, batch):
            _, logits = clf(cache[i:i + batch])
            loss = F.cross_entropy(logits, labels_d[i:i + batch])
            opt2.zero_grad(set_to_none=True)
            loss.backward()
            opt2.step()

    cached_epoch()  # warm-up (Adam state)
    # Timed without the memory sampler: its thread's GIL requests would dominate a millisecond epoch.
    t_cached = timed(cached_epoch, device, repeats=5)
    with PeakMemory(device) as mem_cached:
        cached_epoch()
    with PeakMemory(device) as mem_e2e:
        t_e2e = timed(e2e_epoch, device, repeats=2 if device.startswith("cuda") else 1)
    return {"n": n, "batch": batch, "e2e_s": t_e2e, "cached_s": t_cached, "speedup": t_e2e / t_cached,
            "mem_e2e": mem_e2e.text(), "mem_cached": mem_cached.text()}


def bench_coop(model, tokenizer, device: str, *, n_classes: int, batch: int, n_ctx: int = 16) -> dict:
    """One CoOp optimisation step (C prompts through the text tower, forward and backward, plus the image batch
    from the cache) against one step on the boundary cache (proj + linear head) and one text-tower pass alone."""
    from lmmreg.methods.coop import CoOpClassifier, PromptLearner

    names = [" ".join(random.Random(k).choices(WORDS, k=random.Random(k).randint(1, 3))) for k in range(n_classes)]
    model = model.to(device)
    model.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    prompts = PromptLearner(model, tokenizer, names, n_ctx=n_ctx, ctx_init="", generator=gen)
    coop = CoOpClassifier(prompts.to(device), 100.0)
    opt = torch.optim.SGD([prompts.ctx], lr=2e-3, momentum=0.9)
    dim, width = model.visual.output_dim, model.visual.proj.shape[0]
    feats = torch.randn(batch, dim, device=device)
    labels = torch.randint(0, n_classes, (batch,), device=device)

    def coop_step():
        loss = F.cross_entropy(coop(feats)[1], labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def text_pass():  # the text tower once over the C prompts, forward and backward to the context
        prompts().sum().backward()

    clf = EmbeddingClassifier(VisionTail(model.visual, 1), dim, n_classes).to(device)
    opt2 = torch.optim.Adam(clf.parameters(), lr=1e-4)
    cache = torch.randn(batch, width, device=device)

    def cached_step():
        loss = F.cross_entropy(clf(cache)[1], labels)
        opt2.zero_grad(set_to_none=True)
        loss.backward()
        opt2.step()

    reps = 20 if device.startswith("cuda") else 5
    for fn in (coop_step, text_pass, cached_step):  # warm-up
        fn()
    t_coop = timed(lambda: [coop_step() for _ in range(reps)], device, repeats=3) / reps
    t_text = timed(lambda: [text_pass() for _ in range(reps)], device, repeats=3) / reps
    t_cached = timed(lambda: [cached_step() for _ in range(reps)], device, repeats=3) / reps
    return {"classes": n_classes, "batch": batch, "n_ctx": n_ctx, "tokens": prompts.prefix.shape[1] + n_ctx +
            prompts.suffix.shape[1], "coop_ms": t_coop * 1e3, "text_ms": t_text * 1e3, "cached_ms": t_cached * 1e3,
            "ratio": t_coop / t_cached, "text_passes": (t_coop - t_cached) / t_text}


def machine(device: str) -> str:
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    line = (f"{cpu}, {os.cpu_count()} logical cores (torch threads {torch.get_num_threads()}), {mem:.0f} GiB RAM; "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}")
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(0)
        line += f"; GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return line


def run_device(device: str, args) -> list[str]:
    cuda = device.startswith("cuda")
    lines = [f"### {device.upper()}", "", f"Machine: {machine(device)}", ""]
    ceiling, dtype = matmul_flops(device, size=8192 if cuda else 2048, repeats=5 if cuda else 3)
    lines += [f"Measured matmul ceiling ({dtype}): **{ceiling / 1e9:,.0f} GFLOP/s**", ""]
    datasheet = None
    if cuda:
        name = torch.cuda.get_device_name(0)
        datasheet = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    img_rows, txt_rows, notes = [], [], []
    for name in args.models:
        big = "L-14" in name
        model, preprocess, tokenizer = build_clip(ClipConfig(model=f"{name}-quickgelu"), device=device)
        n_img = args.gpu_images if cuda else (args.cpu_images_large if big else args.cpu_images)
        batch = args.gpu_batch if cuda else min(n_img, 8 if big else 16)
        log.info("%s %s: image features on %d images", device, name, n_img)
        img = bench_images(model, device, n=n_img, batch=batch, ceiling=ceiling)
        mfu = f"; MFU {img['flops'] / (datasheet * 1e12):.1%} of {datasheet:.0f} TFLOP/s datasheet" if datasheet else ""
        img_rows.append(f"| {name} | {img['n']} | {img['batch']} | {img['precision']} | **{img['img_s']:,.1f}** | "
                        f"{img['gflop_img']:.1f} | {img['flops'] / 1e9:,.0f} | {img['frac']:.0%}{mfu} | {img['mem']} |")
        n_txt = args.gpu_texts if cuda else (args.cpu_texts_large if big else args.cpu_texts)
        log.info("%s %s: text on %d descriptions", device, name, n_txt)
        txt = bench_texts(model, tokenizer, device, n=n_txt, batch=args.gpu_text_batch if cuda else 64,
                          workers=args.workers)
        txt_rows.append(f"| {name} | {txt['n']} | {txt['batch']} | **{txt['trim']:,.0f}** | {txt['full']:,.0f} | "
                        f"{txt['trim'] / txt['full']:.2f}x | {txt['mem']} |")
        if not big:
            pipe_n = args.gpu_images if cuda else args.cpu_images
            pipe = bench_pipeline(model, preprocess, device, n_images=pipe_n, batch=batch, workers=args.workers)
            dec = bench_decode(pipe_n * (4 if not cuda else 1), args.workers, batch, model.visual.image_size[0],
                               preprocess)
            notes.append(f"- Features stage end to end ({name}, JPEG 320x240/640x480 -> boundary features, "
                         f"{args.workers} decode workers): **{pipe['img_s']:,.1f} img/s** vs model alone "
                         f"{img['img_s']:,.1f} img/s; decoding + preprocessing alone {dec['img_s']:,.0f} img/s "
                         f"({'never starves the model' if dec['img_s'] > img['img_s'] else 'STARVES the model'}). "
                         f"Peak {pipe['mem']}.")
        if big:
            n_ep = args.gpu_epoch_images if cuda else args.cpu_epoch_images
            log.info("%s %s: cached vs end-to-end epoch on %d images", device, name, n_ep)
            ep = bench_epochs(model, device, n=n_ep, batch=args.epoch_batch)
            notes.append(f"- One training epoch, {name}, {ep['n']} images, batch {ep['batch']}, unlocked_groups=1: "
                         f"end to end (frozen encoder every step) {ep['e2e_s']:.3f} s, on the cache "
                         f"{ep['cached_s'] * 1e3:.3f} ms: **{ep['speedup']:,.0f}x faster** "
                         f"(peak {ep['mem_e2e']} vs {ep['mem_cached']}).")
        del model
        if cuda:
            torch.cuda.empty_cache()
    # CoOp: the only method whose step runs a CLIP tower (the text one); the paper's model on a GPU, the tiny one
    # on CPU. "text passes" = (CoOp step - cached step) / one text-tower pass: the target is <= 1.
    coop_name = args.coop_model or ("ViT-L-14-quickgelu" if cuda else "lmmreg-tiny-quickgelu")
    model, _, tokenizer = build_clip(ClipConfig(model=coop_name), device=device)
    log.info("%s %s: CoOp step vs cached step", device, coop_name)
    co = bench_coop(model, tokenizer, device, n_classes=args.coop_classes, batch=32)
    notes.append(f"- CoOp step, {coop_name}, {co['classes']} classes x {co['tokens']} tokens ({co['n_ctx']} context), "
                 f"batch {co['batch']}: **{co['coop_ms']:.2f} ms** vs {co['cached_ms']:.3f} ms for a step on the "
                 f"boundary cache (**{co['ratio']:,.0f}x**); one text-tower pass (forward + backward) "
                 f"{co['text_ms']:.2f} ms, so a CoOp step costs {co['text_passes']:.2f} text-tower passes more "
                 f"than a cached step.")
    del model
    lines += ["Image features (frozen tower to the unlocked_groups=1 boundary, inference mode, random weights):", "",
              "| model | images | batch | precision | images/s | GFLOP/image | GFLOP/s | of matmul ceiling "
              "| peak memory |",
              "|---|---|---|---|---|---|---|---|---|", *img_rows, "",
              "Text embeddings (synthetic 8-30 word descriptions, sorted by length; trimmed = padded to the batch's "
              "longest, full = 77 tokens; includes tokenization):", "",
              "| model | texts | batch | texts/s trimmed | texts/s 77-padded | gain | peak memory |",
              "|---|---|---|---|---|---|---|", *txt_rows, "", *notes, ""]
    return lines


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    p.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    p.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)))
    p.add_argument("--cpu-images", type=int, default=32)
    p.add_argument("--cpu-images-large", type=int, default=4)
    p.add_argument("--cpu-texts", type=int, default=512)
    p.add_argument("--cpu-texts-large", type=int, default=128)
    p.add_argument("--cpu-epoch-images", type=int, default=4)
    p.add_argument("--epoch-batch", type=int, default=8, help="same batch for both epochs (paper: 64 on GPU)")
    p.add_argument("--gpu-images", type=int, default=4096)
    p.add_argument("--gpu-batch", type=int, default=512)
    p.add_argument("--gpu-texts", type=int, default=100_000)
    p.add_argument("--gpu-text-batch", type=int, default=2048)
    p.add_argument("--gpu-epoch-images", type=int, default=1024)
    p.add_argument("--coop-model", default=None, help="default: ViT-L-14-quickgelu on CUDA, the tiny CLIP on CPU")
    p.add_argument("--coop-classes", type=int, default=101, help="prompts per CoOp step (UCF-101: 101)")
    args = p.parse_args()
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    if "cuda" in devices and args.epoch_batch == 8:
        args.epoch_batch = 64
    torch.backends.cuda.matmul.allow_tf32 = True
    lines = [f"## CLIP benchmark, {dt.datetime.now().isoformat(timespec='seconds')}", "",
             f"`{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}`", ""]
    for device in devices:
        lines += run_device(device, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines += [f"Whole run: peak RSS {peak:.2f} GiB.", ""]
    text = "\n".join(lines)
    append_section(args.out, "# Benchmarks\n\nWritten by `benchmarks/bench_clip.py` (`make bench`).\n\n", text)
    print(text)


if __name__ == "__main__":
    main()
