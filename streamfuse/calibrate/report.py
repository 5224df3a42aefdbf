"""`streamfuse calibrate report [--data DIR]`: how well
registration and calibration work, in numbers (docs/benchmarks.md quotes them).

1. The synthetic rig (known mapping): target-based recovery from rendered heated-board views,
   one of them spoiled on purpose; target-free recovery from rendered street scenes, by day
   and by night, and live refinement's recovery from a small drift.
2. `registration/{msrs,roadscene}_superfusion_warp`: IR deformed by a known displacement field;
   the mean end-point error of the target-free mapping against it, before and after, beside
   the best any single homography can do (a least-squares fit to the field itself), and where
   the estimator ends when started at that best homography (its floor on the set).
3. `registration/roadscene_fullframe_unaligned`: the full thermal frame against a visible crop;
   where the crop lands in the thermal frame, against the dataset's registered crop (located
   in the full frame by SIFT matching, same modality, as the reference).
4. `calibration/cali_thermal_example`: the board found in both images.
5. The warp's cost per frame on this machine, CPU and (where cupy sees a GPU) GPU.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from streamfuse.calibrate.board import Pattern, detect, find_views, fit_views
from streamfuse.calibrate.synthetic import synthetic_pairs
from streamfuse.capture.scene import SyntheticScene
from streamfuse.capture.synthetic import synthetic_H_vis_from_ir
from streamfuse.register import targetfree
from streamfuse.register.geometry import (
    apply_homography,
    corner_rms,
    frame_corners,
    scaling,
)

IR_SIZE, VIS_SIZE = (640, 512), (640, 480)


def spoiled_board_pairs(views: int, seed: int = 0, shift_px: float = 6.0) -> list:
    """Heated-board pairs of the synthetic rig, the last one with its IR image moved by
    `shift_px` (the board moved between the two exposures): an outlier to reject."""
    H = synthetic_H_vis_from_ir(IR_SIZE, VIS_SIZE)
    pairs = synthetic_pairs(Pattern.parse("chessboard:9x6"), H, IR_SIZE, VIS_SIZE, views=views, seed=seed)
    name, ir, vis = pairs[-1]
    pairs[-1] = (name, cv2.warpAffine(ir, np.float32([[1, 0, shift_px], [0, 1, 0]]), IR_SIZE,
                                      borderMode=cv2.BORDER_REPLICATE), vis)
    return pairs


def superfusion_item(folder: Path, name: str):
    """(IR, visible, best single H_vis_from_ir, EPE of a mapping) of one item of a SuperFusion
    set (see its SOURCE.md: ir_warped(q) shows the visible content at q + disp(q), so the true
    mapping sends q to q + disp(q)); EPE in pixels, the mean over every visible pixel."""
    vis = cv2.imread(str(folder / "vis" / f"{name}.png"))
    ir = cv2.imread(str(folder / "ir_warped" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    disp = np.load(folder / "disp" / f"{name}.npz")["disp"].astype(np.float64)
    h, w = disp.shape[:2]
    q = np.stack(np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)), -1).reshape(-1, 2)
    target = q + disp.reshape(-1, 2)
    step = slice(None, None, 61)   # the field is smooth: a sparse least-squares fit suffices
    best, _ = cv2.findHomography(q[step], target[step], 0)

    def epe(H):
        return float(np.hypot(*(apply_homography(H, q) - target).T).mean())

    return ir, vis, best, epe


def superfusion_epe(folder: Path, name: str) -> tuple[float, float, float, bool, float]:
    """(EPE before, after target-free registration, of the best homography, accepted, seconds)
    for one item of a SuperFusion set. A refused estimate keeps the start, so it counts as
    uncorrected."""
    ir, vis, best, epe = superfusion_item(folder, name)
    t = time.perf_counter()
    estimate = targetfree.estimate(ir, vis, np.eye(3))
    seconds = time.perf_counter() - t
    return epe(np.eye(3)), epe(estimate.H_vis_from_ir), epe(best), estimate.accepted, seconds


def superfusion_floor(folder: Path, name: str) -> tuple[float, bool]:
    """(EPE of the estimator's result when it starts *at* the best homography, accepted): where
    the images' shared structure, as the estimator sees it, puts the optimum. Far from the best
    homography's EPE means the data's ground truth and its content disagree (or the similarity
    is biased), and no better search can close that gap."""
    ir, vis, best, epe = superfusion_item(folder, name)
    estimate = targetfree.estimate(ir, vis, best, near_px=5.0)
    return epe(estimate.H_vis_from_ir if estimate.accepted else best), estimate.accepted


def fullframe_reference(folder: Path, name: str) -> np.ndarray:
    """H_vis_from_ir from the full thermal frame to the visible crop, through the dataset's
    registered IR crop located in the full frame by SIFT + RANSAC (both thermal)."""
    full = cv2.imread(str(folder / "ir_full" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
    crop = cv2.imread(str(folder / "ir_crop_aligned" / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(folder / "vis_crop_hr" / f"{name}.jpg"))
    sift = cv2.SIFT_create(4000)
    (kc, dc), (kf, df) = sift.detectAndCompute(crop, None), sift.detectAndCompute(full, None)
    good = [m for m, n in cv2.BFMatcher().knnMatch(dc, df, k=2) if m.distance < 0.75 * n.distance]
    H_full_from_crop, _ = cv2.findHomography(np.float32([kc[m.queryIdx].pt for m in good]),
                                             np.float32([kf[m.trainIdx].pt for m in good]), cv2.RANSAC, 2.0)
    # The aligned visible crop is the high-resolution one resized to the IR crop's size.
    H_vis_from_crop = scaling(vis.shape[1] / crop.shape[1], vis.shape[0] / crop.shape[0])
    return H_vis_from_crop @ np.linalg.inv(H_full_from_crop)


def fullframe_error(folder: Path, name: str) -> tuple[float, bool, float]:
    """(mean distance in IR px between where the estimate and the reference put the visible
    crop's corners in the thermal frame, accepted, seconds), from a search without a start."""
    ir = cv2.imread(str(folder / "ir_full" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    vis = cv2.imread(str(folder / "vis_crop_hr" / f"{name}.jpg"))
    t = time.perf_counter()
    estimate = targetfree.estimate(ir, vis)
    seconds = time.perf_counter() - t
    corners = frame_corners((vis.shape[1], vis.shape[0]))
    reference = fullframe_reference(folder, name)
    d = apply_homography(np.linalg.inv(estimate.H_vis_from_ir), corners) - \
        apply_homography(np.linalg.inv(reference), corners)
    return float(np.hypot(*d.T).mean()), estimate.accepted, seconds


def warp_ms(backend: str, vis_size: tuple[int, int], repeats: int = 200) -> float:
    """Median milliseconds to warp one 640x512 16-bit IR frame into `vis_size`, as the main
    loop does (GPU: upload, warp and download included)."""
    from streamfuse.register.registrar import Registrar

    H = scaling(vis_size[0] / IR_SIZE[0], vis_size[1] / IR_SIZE[1]) @ synthetic_H_vis_from_ir(IR_SIZE, IR_SIZE)
    registrar = Registrar(H, IR_SIZE, vis_size, backend=backend)
    ir = SyntheticScene(seed=1, ir_size=IR_SIZE).render_ir(0.0, 0)
    times = []
    for _ in range(repeats + 10):
        t = time.perf_counter()
        registrar.warp(ir)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times[10:]))


def _synthetic_lines() -> list[str]:
    H = synthetic_H_vis_from_ir(IR_SIZE, VIS_SIZE)
    lines = ["synthetic rig (IR 640x512 -> visible 640x480, known mapping)"]
    pairs = spoiled_board_pairs(9)
    views, missing = find_views(pairs, Pattern.parse("chessboard:9x6"))
    fit = fit_views(views, IR_SIZE, missing)
    lines.append(f"  board chessboard:9x6, {len(pairs)} views (IR inverted, 3 K contrast, blur 1.5 px, 60 mK noise; "
                 f"view {pairs[-1][0]} shifted 6 px): used {len(fit.used)}, left out {sorted(fit.rejected)}")
    lines.append(f"    fit {fit.rms_px:.3f} px RMS; error at the IR frame's corners "
                 f"{corner_rms(fit.H_vis_from_ir, H, IR_SIZE):.3f} px RMS")
    for night in (False, True):
        scene = SyntheticScene(seed=3, night=night, ir_size=IR_SIZE, vis_size=VIS_SIZE, H_vis_from_ir=H)
        estimates = []
        for seq in (0, 40, 80):
            t = time.perf_counter()
            a = targetfree.estimate(scene.render_ir(seq / 30, seq), scene.render_vis(seq / 30, seq))
            estimates.append(a)
            lines.append(f"  target-free, {'night' if night else 'day'} frame {seq}: corner error "
                         f"{corner_rms(a.H_vis_from_ir, H, IR_SIZE):.2f} px, confidence {a.confidence:.2f} "
                         f"({time.perf_counter() - t:.2f} s){'' if a.accepted else ', refused: ' + a.reason}")
        confident = [e for e in estimates if e.accepted]
        if confident:
            combined = targetfree.combine(confident, IR_SIZE)
            lines.append(f"    {len(confident)} accepted frames combined: {corner_rms(combined, H, IR_SIZE):.2f} px")
    drifted = np.array([[1, 0, 4.0], [0, 1, -3.0], [0, 0, 1]]) @ H   # 5 px off, as live refinement sees it
    for seq in (0, 40, 80):
        a = targetfree.estimate(scene.render_ir(seq / 30, seq), scene.render_vis(seq / 30, seq), drifted, near_px=10)
        lines.append(f"  live refinement, night frame {seq}, from 5 px off: corner error "
                     f"{corner_rms(a.H_vis_from_ir, H, IR_SIZE):.2f} px, confidence {a.confidence:.2f}")
    return lines


def superfusion_lines(folder: Path) -> list[str]:
    """The figures of one SuperFusion set: pairs answered, EPE before / after / best, the worst
    change of an accepted pair, seconds per pair."""
    names = sorted(p.stem for p in (folder / "vis").glob("*.png"))
    rows = np.array([superfusion_epe(folder, n) for n in names])
    before, after, best, ok, seconds = rows.T
    ok = ok.astype(bool)
    lines = [f"{folder.name} ({len(rows)} pairs, start: no correction): {ok.sum()} answered, {(~ok).sum()} refused; "
             f"end-point error mean / median: before {before.mean():.2f} / {np.median(before):.2f} px, after "
             f"{after.mean():.2f} / {np.median(after):.2f} px (refused pairs counted uncorrected), best single "
             f"homography {best.mean():.2f} / {np.median(best):.2f} px"]
    if ok.any():
        k = np.flatnonzero(ok)[np.argmax((after - before)[ok])]
        lines.append(f"  worst accepted pair: {names[k]} {before[k]:.1f} -> {after[k]:.1f} px; "
                     f"{seconds.mean():.2f} s per pair ({seconds.max():.2f} s at most)")
    floor = np.array([superfusion_floor(folder, n) for n in names])
    lines.append(f"  started at the best homography instead: mean {floor[:, 0].mean():.2f} px "
                 f"({int(floor[:, 1].sum())} moved away from it, {(floor[:, 0] > best + 1).sum()} by over 1 px more EPE)")
    return lines


def _shared_lines(data: Path) -> list[str]:
    lines = []
    for name in ("msrs_superfusion_warp", "roadscene_superfusion_warp"):
        folder = data / "registration" / name
        lines += superfusion_lines(folder) if folder.is_dir() else [f"{folder}: not found, skipped"]
    folder = data / "registration" / "roadscene_fullframe_unaligned"
    if not folder.is_dir():
        lines.append(f"{folder}: not found, skipped")
    else:
        rows = np.array([fullframe_error(folder, p.stem) for p in sorted((folder / "ir_full").glob("*.png"))])
        error, ok, seconds = rows[:, 0], rows[:, 1].astype(bool), rows[:, 2]
        lines.append(f"roadscene_fullframe_unaligned ({len(rows)} frames, no starting mapping): crop located within "
                     f"5 px in {(error < 5).sum()}, median {np.median(error):.1f} px (IR px); {ok.sum()} answered, "
                     f"{(ok & (error >= 5)).sum()} of them off by 5 px or more; {seconds.mean():.2f} s per frame")
    folder = data / "calibration" / "cali_thermal_example"
    if not folder.is_dir():
        lines.append(f"{folder}: not found, skipped")
    else:
        found = [detect(cv2.imread(str(folder / f), cv2.IMREAD_UNCHANGED), Pattern.parse("chessboard:6x5"),
                        thermal=f.startswith("thermal")) is not None for f in ("thermal0000.jpg", "rgb0000.jpg")]
        lines.append(f"cali_thermal_example: chessboard:6x5 found in thermal: {found[0]}, in RGB: {found[1]}")
    return lines


def _timing_lines() -> list[str]:
    from streamfuse.register.registrar import gpu_problem

    lines = [f"warp of a 640x512 16-bit IR frame, median of 200 ({os.cpu_count()} CPU cores)"]
    problem = gpu_problem()
    for size in ((640, 512), (1920, 1080)):
        gpu = f"{warp_ms('gpu', size):.2f} ms" if problem is None else f"not measured ({problem})"
        lines.append(f"  into {size[0]}x{size[1]}: CPU {warp_ms('cpu', size):.2f} ms, GPU {gpu}")
    return lines


def report(data: Path) -> None:
    """Print every figure, section by section (about a minute on two cores)."""
    for section in (_synthetic_lines, lambda: _shared_lines(data), _timing_lines):
        print("\n".join(section()), flush=True)

