"""Pairer: nearest-in-time matching of visible frames to IR frames, within a tolerance.

Every expectation is computed independently in the test (brute-force nearest IR frame over
the timestamps the test generated), never copied from a run of the Pairer.
"""
from __future__ import annotations

import heapq
import random

import numpy as np
import pytest

from streamfuse.frames import Frame
from streamfuse.sync import SKEW_HISTORY, Pairer, PairingWatch, SyncStats

MS = 1_000_000
IMAGE = np.zeros((2, 2), np.uint8)  # one shared tiny image: the Pairer never looks at pixels


def frame(camera: str, t_ns: int, seq: int) -> Frame:
    return Frame(IMAGE, int(t_ns), seq, camera, "gray8", int(t_ns))


def stamps(fps: float, duration_s: float, offset_ns: int = 0) -> list[int]:
    """Integer-ns capture times of a camera at `fps` for `duration_s`, shifted by `offset_ns`."""
    n = int(duration_s * fps)
    return [round(i * 1e9 / fps) + offset_ns for i in range(n)]


def run_pairer(pairer: Pairer, ir_ts, vis_ts) -> tuple[list, int]:
    """Push both streams merged in capture-time order (IR first on equal times), then flush.

    Returns (pairs, the largest number of visible frames the Pairer held pending). The
    timestamp lists may be any iterables, so a long run never holds all its frames at once.
    """
    ir = ((t, 0, i, "ir") for i, t in enumerate(ir_ts))
    vis = ((t, 1, i, "vis") for i, t in enumerate(vis_ts))
    pairs, max_pending = [], 0
    for t, _, seq, camera in heapq.merge(ir, vis):
        pairs += pairer.push(frame(camera, t, seq))
        max_pending = max(max_pending, len(pairer._pending))
    pairs += pairer.flush()
    return pairs, max_pending


def nearest(ir_ts: list[int], t: int) -> tuple[int, int]:
    """(index, |distance|) of the IR time nearest to `t`, by brute force."""
    return min(((i, abs(s - t)) for i, s in enumerate(ir_ts)), key=lambda p: p[1])


def test_equal_rates_zero_offset_pair_index_to_index():
    ir_ts = stamps(30, 5)
    vis_ts = stamps(30, 5)
    p = Pairer(tolerance_ns=20 * MS)
    pairs, _ = run_pairer(p, ir_ts, vis_ts)
    assert [(q.ir.seq, q.vis.seq) for q in pairs] == [(i, i) for i in range(len(vis_ts))]
    assert all(q.skew_ns == 0 for q in pairs)
    assert p.stats.pairs == len(vis_ts)
    assert (p.stats.unmatched_vis, p.stats.reused_ir, p.stats.unused_ir, p.stats.late) == (0, 0, 0, 0)


@pytest.mark.parametrize("ir_fps, vis_fps", [(30, 25), (25, 30)])
def test_different_rates_with_offset_pair_with_the_nearest_ir(ir_fps, vis_fps):
    ir_ts = stamps(ir_fps, 10, offset_ns=7 * MS)
    vis_ts = stamps(vis_fps, 10)
    # Tolerance above half the IR period (20 ms at 25 Hz): this test is about nearest, not drops.
    p = Pairer(tolerance_ns=25 * MS)
    pairs, _ = run_pairer(p, ir_ts, vis_ts)

    expected = [nearest(ir_ts, t)[0] for t in vis_ts]
    assert [q.vis.seq for q in pairs] == list(range(len(vis_ts)))  # each visible frame once, in order
    for q, i in zip(pairs, expected):
        # Equal distances would make either neighbour right; compare distances, then indices.
        assert abs(q.skew_ns) == abs(ir_ts[i] - q.vis.t_ns)
        assert q.ir.seq == i
        assert q.ir.t_ns == ir_ts[q.ir.seq]
    half_period = 1e9 / ir_fps / 2
    assert max(abs(q.skew_ns) for q in pairs) <= half_period
    distinct = len(set(expected))
    assert p.stats.pairs == len(vis_ts)
    assert p.stats.unmatched_vis == 0
    assert p.stats.ir_frames == len(ir_ts)
    assert p.stats.paired_ir == distinct
    assert p.stats.unused_ir == len(ir_ts) - distinct
    assert p.stats.reused_ir == len(vis_ts) - distinct
    if ir_fps > vis_fps:
        assert p.stats.unused_ir > 0 and p.stats.reused_ir == 0
    else:
        assert p.stats.reused_ir > 0


def test_slow_ir_camera_is_reused_and_every_visible_frame_pairs():
    ir_ts = stamps(9, 6.2, offset_ns=7 * MS)  # IR runs on past the last visible frame
    vis_ts = stamps(30, 6)
    p = Pairer(tolerance_ns=60 * MS)  # half of a 9 Hz period is 55.6 ms
    pairs, _ = run_pairer(p, ir_ts, vis_ts)

    expected = [nearest(ir_ts, t)[0] for t in vis_ts]
    assert [q.ir.seq for q in pairs] == expected
    assert p.stats.pairs == len(vis_ts) and p.stats.unmatched_vis == 0
    assert p.stats.reused_ir == len(vis_ts) - len(set(expected)) > 0
    assert max(abs(q.skew_ns) for q in pairs) <= 1e9 / 9 / 2


def test_visible_frames_without_ir_within_tolerance_are_dropped_and_counted():
    tolerance = 20 * MS
    ir_ts = [t for t in stamps(30, 4, offset_ns=7 * MS) if not 1_500 * MS <= t < 2_500 * MS]  # a 1 s gap
    vis_ts = stamps(25, 4)
    p = Pairer(tolerance_ns=tolerance)
    pairs, _ = run_pairer(p, ir_ts, vis_ts)

    in_reach = {j for j, t in enumerate(vis_ts) if nearest(ir_ts, t)[1] <= tolerance}
    dropped = len(vis_ts) - len(in_reach)
    assert dropped >= 20  # the gap holds 25 visible frames, minus those near its edges
    assert {q.vis.seq for q in pairs} == in_reach
    assert p.stats.unmatched_vis == dropped
    assert p.stats.pairs == len(in_reach)
    assert all(abs(q.skew_ns) <= tolerance for q in pairs)


def test_match_exactly_at_the_tolerance_is_kept_and_just_beyond_is_dropped():
    p = Pairer(tolerance_ns=20 * MS)
    pairs = p.push(frame("ir", 0, 0)) + p.push(frame("vis", 20 * MS, 0)) + p.push(frame("vis", 60 * MS + 1, 1))
    pairs += p.push(frame("ir", 80 * MS + 2, 1)) + p.flush()
    # vis 0 is exactly 20 ms from ir 0; vis 1 is 20 ms + 1 ns from both IR frames.
    assert [(q.ir.seq, q.vis.seq) for q in pairs] == [(0, 0)]
    assert p.stats.unmatched_vis == 1


def test_late_frames_are_counted_and_never_paired():
    p = Pairer(tolerance_ns=20 * MS)
    pairs = []
    pairs += p.push(frame("ir", 0, 0))
    pairs += p.push(frame("vis", 1 * MS, 0))
    pairs += p.push(frame("ir", 33 * MS, 1))
    pairs += p.push(frame("vis", 10 * MS, 1))   # late: time is already at 33 ms
    pairs += p.push(frame("vis", 40 * MS, 2))
    pairs += p.push(frame("ir", 39 * MS, 2))    # late, although it is the nearest IR frame to vis 2
    pairs += p.push(frame("ir", 66 * MS, 3))
    pairs += p.flush()

    assert [(q.ir.seq, q.vis.seq) for q in pairs] == [(0, 0), (1, 2)]
    assert p.stats.late == 2
    assert p.stats.ir_frames == 3       # the late IR frame is not counted as seen
    assert p.stats.unmatched_vis == 0   # nor is the late visible frame a drop


def test_advance_decides_once_no_later_ir_frame_could_be_nearer():
    # IR stalls after the frame at 90 ms; the best candidate for vis@100 ms is 10 ms away, so
    # once time is more than 10 ms past the visible frame no future IR frame can beat it.
    p = Pairer(tolerance_ns=20 * MS)
    assert p.push(frame("ir", 90 * MS, 0)) == []
    assert p.push(frame("vis", 100 * MS, 0)) == []
    assert p.advance(110 * MS) == []            # an IR frame at 110 ms would tie: still pending
    assert p.advance(105 * MS) == []            # time does not go back, so ...
    assert p.push(frame("ir", 108 * MS, 1)) == [] and p.stats.late == 1   # ... this IR frame is late
    pairs = p.advance(110 * MS + 1)
    assert [(q.ir.seq, q.vis.seq) for q in pairs] == [(0, 0)]
    assert p.flush() == []


def test_advance_drops_a_visible_frame_only_after_the_tolerance_has_passed():
    # The last IR frame (60 ms) is beyond the 20 ms tolerance of vis@100 ms; the IR camera stalls.
    p = Pairer(tolerance_ns=20 * MS)
    p.push(frame("ir", 60 * MS, 0))
    p.push(frame("vis", 100 * MS, 0))
    assert p.advance(120 * MS) == []
    assert p.stats.unmatched_vis == 0 and len(p._pending) == 1   # not decided yet
    assert p.advance(120 * MS + 1) == []
    assert p.stats.unmatched_vis == 1 and len(p._pending) == 0

    # Waiting was necessary: an IR frame arriving inside the tolerance still pairs.
    p = Pairer(tolerance_ns=20 * MS)
    p.push(frame("ir", 60 * MS, 0))
    p.push(frame("vis", 100 * MS, 0))
    assert p.advance(115 * MS) == []
    pairs = p.push(frame("ir", 118 * MS, 1))
    assert [(q.ir.seq, q.vis.seq) for q in pairs] == [(1, 0)]


def test_advance_with_no_ir_frame_at_all():
    p = Pairer(tolerance_ns=20 * MS)
    p.push(frame("vis", 0, 0))
    assert p.advance(20 * MS) == [] and p.stats.unmatched_vis == 0
    assert p.advance(20 * MS + 1) == [] and p.stats.unmatched_vis == 1


def test_non_positive_tolerance_is_rejected():
    with pytest.raises(ValueError):
        Pairer(tolerance_ns=0)


def _jittered(fps: float, duration_s: float, jitter_ns: int, rng: random.Random):
    period = 1e9 / fps
    for i in range(int(duration_s * fps)):
        yield round(i * period) + rng.randint(-jitter_ns, jitter_ns)


def test_long_run_skew_stays_bounded_without_drift_or_growth():
    # A full simulated hour: about 108k IR + 107.5k visible frames, ~1-2 s of pure Python here.
    duration_s, jitter = 3600, 2 * MS
    ir_rng, vis_rng = random.Random(1), random.Random(2)
    ir_ts = list(_jittered(30, duration_s, jitter, ir_rng))
    vis_ts = list(_jittered(29.87, duration_s, jitter, vis_rng))
    p = Pairer(tolerance_ns=20 * MS)
    pairs, max_pending = run_pairer(p, iter(ir_ts), iter(vis_ts))

    # Independent nearest distances with numpy (both lists are sorted: jitter << period/2).
    ir = np.array(ir_ts, dtype=np.int64)
    vis = np.array(vis_ts, dtype=np.int64)
    assert np.all(np.diff(ir) > 0) and np.all(np.diff(vis) > 0)
    idx = np.clip(np.searchsorted(ir, vis), 1, len(ir) - 1)
    best = np.minimum(np.abs(ir[idx - 1] - vis), np.abs(ir[idx] - vis))
    skews = np.array([q.skew_ns for q in pairs], dtype=np.int64)
    assert len(pairs) == len(vis_ts) == p.stats.pairs
    np.testing.assert_array_equal(np.abs(skews), best)

    # Neighbouring IR frames are at most one period + 2 x jitter apart: nearest <= half of that.
    assert np.abs(skews).max() <= 1e9 / 30 / 2 + jitter
    tenth = len(skews) // 10
    first, last = skews[:tenth].mean() / MS, skews[-tenth:].mean() / MS
    assert abs(first) < 1.0 and abs(last) < 1.0 and abs(first - last) < 1.0   # ms: no drift
    assert max_pending <= 3
    assert len(p.stats.skews_ns) == SKEW_HISTORY == p.stats.skews_ns.maxlen
    assert list(p.stats.skews_ns) == skews[-SKEW_HISTORY:].tolist()


def test_skew_summary_ms_for_known_skews():
    stats = SyncStats()
    assert stats.skew_summary_ms() == {"mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    stats.skews_ns.extend([-4 * MS, 1 * MS, 2 * MS, 3 * MS])
    s = stats.skew_summary_ms()
    # |skew| = 1, 2, 3, 4 ms: mean 2.5, median 2.5, p95 interpolated at rank 0.95 * 3 = 2.85
    # between 3 and 4 -> 3.85, max 4 (the negative skew counts by its magnitude).
    assert s == pytest.approx({"mean": 2.5, "p50": 2.5, "p95": 3.85, "max": 4.0})


def test_a_run_where_nothing_pairs_is_named_once_with_the_cause():
    now = [0.0]
    watch = PairingWatch(20_000_000, after_s=5.0, clock=lambda: now[0])
    assert watch.check({"ir": 0}, 0) is None                       # one camera alone: no stall yet
    now[0] = 10.0
    assert watch.check({"ir": 10_000_000_000}, 0) is None
    assert watch.check({"ir": 10_000_000_000, "vis": 9_585_000_000}, 0) is None   # both deliver from now
    now[0] = 14.0
    assert watch.check({"ir": 14_000_000_000, "vis": 13_585_000_000}, 0) is None  # 4 s: not yet
    now[0] = 15.5
    warning = watch.check({"ir": 15_500_000_000, "vis": 15_085_000_000}, 0)
    assert warning is not None and "\n" not in warning
    assert "+415 ms apart" in warning and "20 ms" in warning and "clock_offset_ms" in warning
    now[0] = 20.0
    assert watch.check({"ir": 1, "vis": 2}, 0) is None and watch.warning == warning  # said once, still shown
    assert watch.check({"ir": 1, "vis": 2}, 3) is None and watch.warning is None     # pairs again: cleared
    now[0] = 30.0
    assert watch.check({"ir": 1, "vis": 2}, 3) is not None                           # a new stall is said again
