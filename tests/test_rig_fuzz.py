"""A seeded sample of malformed rigs (tests/fuzz_rigs.py) through `check` and `run --frames 3`:
exit 0 or one line naming the rig file with exit 2, never a traceback or a hang."""
from __future__ import annotations

import collections

from fuzz_rigs import fuzz

CASES = 120


def test_malformed_rigs_give_one_line_errors_and_never_hang():
    results = fuzz(CASES, seed=2026, run_share=0.3)
    counts = collections.Counter(verdict for _, verdict, _ in results)
    print("fuzzed rigs:", dict(counts))
    bad = [f"{label}: {verdict}: {last}" for label, verdict, last in results if verdict not in ("ok", "usage")]
    assert not bad, "\n".join(bad)
    assert counts["usage"] >= CASES // 2  # most mutations break the rig: the errors were exercised
    assert sum(label.endswith("-run") for label, _, _ in results) >= 10
