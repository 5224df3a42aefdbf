"""`streamfuse bench-models`: what the learned fusion costs per frame.

Items, each timed per frame after a warm-up, on synthetic street frames (the IR warped into the
visible frame, as the pipeline hands them to the fuser):

    lite fuse          the registered `lite` Fuser, whole frame in, BGR uint8 out (CPU, no torch)
    gff fuse           guided-filter fusion (`quality.references`), the same frames: the
                       classical method lite is measured against; the report ends with lite / gff
    spg forward        the spg network's forward alone with a precomputed modulation (random
                       weights: the cost does not depend on their values); fp32 on the CPU, bf16
                       autocast on CUDA, and on CUDA once more with channels_last
    spg forward+mod    the same, the modulation given explicitly (a rig with priors)
    spg modulation     computing the CSAF modulation from semantic maps: once per prior refresh
    spg priors every 8 the forward with a new prior's modulation every 8th frame (its cost in
                       that frame): the per-frame cost of a rig whose priors refresh every 8 frames

One line per item: median, p90 and fastest ms per frame, and the median's frames per second.
"""
from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from typing import Callable, TextIO

import numpy as np

#: The lite fuser takes ~12 ms a frame: it is always timed over at least this many frames (~2.5 s).
LITE_MIN_FRAMES = 200
#: The prior refresh cadence of the "spg priors every N" item (a fast one: `priors.every_frames` is 30 by default).
PRIOR_EVERY = 8
#: Distinct synthetic frames cycled through (rendering is not timed).
_SCENE_FRAMES = 4


def scene_frames(size: tuple[int, int], count: int = _SCENE_FRAMES) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` registered (IR uint16, visible BGR uint8) pairs of `size` (w, h) from the synthetic street."""
    import cv2

    from streamfuse.capture.scene import SyntheticScene

    scene = SyntheticScene(seed=3, night=True, vis_size=size, ir_size=size)
    pairs = []
    for t in range(count):
        ir = cv2.warpPerspective(scene.render_ir(t / 25.0, t), scene.H_vis_from_ir, size, flags=cv2.INTER_LINEAR)
        pairs.append((ir, scene.render_vis(t / 25.0, t)))
    return pairs


def timed(step: Callable[[int], object], frames: int, warmup: int, sync: Callable[[], None] = lambda: None
          ) -> np.ndarray:
    """Milliseconds per call of `step(i)` for `frames` calls after `warmup` untimed ones."""
    for i in range(warmup):
        step(i)
    sync()
    times = np.empty(frames)
    for i in range(frames):
        start = time.perf_counter()
        step(i)
        sync()  # CUDA runs asynchronously: count the kernels, not just their launch
        times[i] = (time.perf_counter() - start) * 1e3
    return times


def lite_times(size: tuple[int, int], frames: int, warmup: int = 3) -> np.ndarray:
    """ms per frame of the registered `lite` Fuser on synthetic frames of `size` (w, h)."""
    from streamfuse.fuse import FusionConfig, make_fuser

    fuser = make_fuser(FusionConfig(mode="lite"))
    pairs = scene_frames(size)
    return timed(lambda i: fuser.fuse(*pairs[i % len(pairs)]), frames, warmup)


def gff_times(size: tuple[int, int], frames: int, warmup: int = 3) -> np.ndarray:
    """ms per frame of guided-filter fusion (`quality.references.GffFuser`) at `size` (w, h)."""
    from streamfuse.quality.references import GffFuser

    fuser = GffFuser()
    pairs = scene_frames(size)
    return timed(lambda i: fuser.fuse(*pairs[i % len(pairs)]), frames, warmup)


def spg_times(size: tuple[int, int], frames: int, device: str = "cpu", *, modulated: bool = False,
              channels_last: bool = False, refresh_every: int | None = None, warmup: int = 1) -> np.ndarray:
    """ms per forward of the spg network (random weights) at `size` (w, h, a multiple of 8).

    fp32 on the CPU; bf16 autocast on CUDA. `modulated`: with a precomputed modulation.
    `refresh_every`: a new prior's modulation computed on every N-th frame (a rig with priors
    refreshed every N frames), its cost counted in that frame.
    """
    import torch

    net, ir, vis, sync = _spg_setup(size, device, channels_last)
    w, h = size
    with torch.inference_mode(), _autocast(device):
        # Without a prior the fuser reuses the no-prior modulation, computed once per frame size.
        modulation = [net.modulation(*_prior_maps(device), h, w) if modulated or refresh_every
                      else net.no_prior(h, w, ir)]

        def step(i: int):
            if refresh_every and i % refresh_every == 0:
                modulation[0] = net.modulation(*_prior_maps(device), h, w)
            return net(ir, vis, modulation[0])

        return timed(step, frames, warmup, sync)


def modulation_times(size: tuple[int, int], frames: int, device: str = "cpu", warmup: int = 1) -> np.ndarray:
    """ms per computation of the spg modulation (the work of one prior refresh) at `size` (w, h)."""
    import torch

    net, _, _, sync = _spg_setup(size, device, False)
    prior_ir, prior_vis = _prior_maps(device)
    w, h = size
    with torch.inference_mode(), _autocast(device):
        return timed(lambda i: net.modulation(prior_ir, prior_vis, h, w), frames, warmup, sync)


def _spg_setup(size: tuple[int, int], device: str, channels_last: bool):
    """A random spg network and one synthetic frame as tensors on `device`, and its sync."""
    import torch

    from streamfuse.models import spg
    from streamfuse.thermal import ir_to_u8

    torch.manual_seed(0)
    net = spg.build_net().to(device).eval()
    ir, vis = scene_frames(size, 1)[0]
    ir = torch.from_numpy(ir_to_u8(ir).astype(np.float32) / 255.0)[None, None].to(device)
    vis = torch.from_numpy(vis.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        ir, vis = ir.contiguous(memory_format=torch.channels_last), vis.contiguous(memory_format=torch.channels_last)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return net, ir, vis, sync


def _prior_maps(device: str):
    """Semantic maps on the extractor's grid for a 640x512 frame (14 x 17 patches), random."""
    import torch

    from streamfuse.models import spg

    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 1, spg.SEMANTIC_DIM, 14, 17, generator=g)
    return maps[0].to(device), maps[1].to(device)


def _autocast(device: str):
    import torch

    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def device_name(device: str, torch=None) -> str:
    """The GPU's name, or the CPU's model and core count (and torch's threads, with torch)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    threads = f", {torch.get_num_threads()} torch threads" if torch is not None else ""
    return f"{model} ({os.cpu_count()} cores{threads})"


def bench(size: tuple[int, int] = (640, 512), frames: int = 10, device: str = "cpu", out: TextIO | None = None
          ) -> dict[str, np.ndarray]:
    """Time every item (module docstring) and print one line each to `out` (stdout); returns the
    times (ms). Without torch installed the spg items are left out (said in the header)."""
    try:
        import torch
    except ImportError:
        torch = None
    out = sys.stdout if out is None else out

    version = f"torch {torch.__version__}" if torch is not None else "no torch (spg items left out)"
    print(f"streamfuse bench-models  {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{device}: {device_name(device, torch)}  {version}  {size[0]}x{size[1]}", file=out, flush=True)
    precision = "bf16" if device == "cuda" else "fp32"
    lite_frames = max(frames, LITE_MIN_FRAMES)
    items: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("lite fuse (cpu)", lambda: lite_times(size, lite_frames)),
        ("gff fuse (cpu)", lambda: gff_times(size, lite_frames // 2)),
    ]
    if torch is not None:
        items += [
            (f"spg forward {precision}", lambda: spg_times(size, frames, device)),
            (f"spg forward+mod {precision}", lambda: spg_times(size, frames, device, modulated=True)),
            (f"spg modulation {precision}", lambda: modulation_times(size, frames, device)),
            (f"spg priors every {PRIOR_EVERY} {precision}",
             lambda: spg_times(size, max(frames, PRIOR_EVERY), device, refresh_every=PRIOR_EVERY)),
        ]
    if device == "cuda":
        items.insert(3, (f"spg forward {precision} channels_last",
                         lambda: spg_times(size, frames, device, channels_last=True)))
    results = {}
    for name, run in items:
        times = results[name] = run()
        p50, p90 = np.percentile(times, [50, 90])
        # The fastest frame too: on a shared machine it is the one the others disturbed least.
        print(f"{name:<34} {p50:10.2f} ms/frame  p90 {p90:10.2f} ms  min {times.min():10.2f} ms  "
              f"{1e3 / p50:8.2f} fps  ({len(times)} frames)", file=out, flush=True)
        if name.startswith("gff"):
            lite_p50, gff_p50 = np.median(results["lite fuse (cpu)"]), np.median(times)
            print(f"{'lite / gff (median)':<34} {lite_p50 / gff_p50:10.2f} x", file=out, flush=True)
    return results
