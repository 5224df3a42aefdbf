"""`streamfuse eval`'s figures (matplotlib), the best-per-column mark and the progress bar."""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from helpers import REPO

from streamfuse.cli import main
from streamfuse.quality.evaluate import BEST, IR_ONLY, Score, format_table, format_user_table, summarize
from streamfuse.quality.figures import crop_box
from streamfuse.quality.measures import MEASURES


def _matplotlib():
    return pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -e '.[figures]'")


def _pair_with_a_hot_square(folder, name="a", square=(150, 70, 16)):
    """folder/{ir,vis}/NAME.png, 320x240: an IR of noise around 60 with one warm square (x, y, side)."""
    rng = np.random.default_rng(1)
    ir = np.clip(rng.normal(60, 3, (240, 320)), 0, 255).astype(np.uint8)
    x, y, side = square
    ir[y:y + side, x:x + side] = 200
    vis = cv2.cvtColor(np.clip(rng.normal(110, 20, (240, 320)), 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for role, image in (("ir", ir), ("vis", vis)):
        (folder / role).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(folder / role / f"{name}.png"), image)
    return ir


def test_the_crop_lies_around_the_hot_target():
    for square in ((150, 70, 16), (4, 200, 12), (300, 4, 14)):  # the middle, and against two borders
        x, y, side = square
        ir = np.full((240, 320), 60, np.uint8)
        ir += np.random.default_rng(2).integers(0, 4, ir.shape, dtype=np.uint8)
        ir[y:y + side, x:x + side] = 200
        x0, y0, x1, y1 = crop_box(ir)
        assert x0 <= x and x + side <= x1 and y0 <= y and y + side <= y1, (square, (x0, y0, x1, y1))
        assert 0 <= x0 and 0 <= y0 and x1 <= 320 and y1 <= 240 and x1 - x0 == y1 - y0 < 120
    flat = np.full((240, 320), 50, np.uint8)
    flat[200:, 250:] = 90  # no target, one warm corner: the crop goes to the hottest region
    x0, y0, x1, y1 = crop_box(flat)
    assert x1 > 280 and y1 > 220


def _scores(values_by_method: dict[str, list[float]], group="set") -> list[Score]:
    return [Score(group, f"p{i}", method, {m: v for m in MEASURES})
            for method, values in values_by_method.items() for i, v in enumerate(values)]


def test_error_bars_are_one_standard_deviation_over_the_pairs():
    _matplotlib()
    from streamfuse.quality.figures import bar_figure

    scores = _scores({"a": [1.0, 2.0, 3.0, 4.0], "b": [2.0, 2.0, 2.0, 2.0]})
    fig = bar_figure(scores, ["set"], "VIF")
    (ax,) = fig.axes
    halves = {}
    for container in ax.containers:
        if hasattr(container, "has_yerr"):
            ((x, low), (_, high)), = container.lines[2][0].get_segments()
            halves[round((low + high) / 2, 6)] = (high - low) / 2
    assert halves[2.5] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))  # a: mean 2.5
    assert halves[2.0] == pytest.approx(0.0)  # b: no spread


def test_the_best_value_of_each_column_is_marked_with_direction():
    scores = _scores({IR_ONLY: [9.0], "a": [1.0], "b": [3.0], "c": [2.0]})
    table = format_table(summarize(scores), "set").splitlines()
    row = {line.split()[0]: line for line in table[2:] if not line.strip().startswith(BEST)}
    assert row["b"].count(BEST) == len(MEASURES)
    assert BEST not in row["a"] and BEST not in row["c"] and BEST not in row["IR"]  # the sources are not ranked
    nan = float("nan")
    user = {"a": {"set": {"TCR": 0.9, "TCR day": 0.8, "TCR degraded": nan, "noise": 1.2, "targets": 3}},
            "b": {"set": {"TCR": 1.1, "TCR day": 0.7, "TCR degraded": nan, "noise": 0.9, "targets": 3}}}
    lines = {line.split()[0]: line.split() for line in format_user_table(user, "set").splitlines()[2:4]}
    assert lines["b"][1:] == ["1.100*", "0.700", "n/a", "0.900*"]  # noise: lower is better
    assert lines["a"][1:] == ["0.900", "0.800*", "n/a", "1.200"]


def test_eval_writes_png_pdf_and_svg_figures_that_open(tmp_path, capsys):
    _matplotlib()
    _pair_with_a_hot_square(tmp_path / "set", "a")
    _pair_with_a_hot_square(tmp_path / "set", "b", square=(40, 150, 14))
    out = tmp_path / "out"
    assert main(["eval", str(tmp_path / "set"), "--modes", "alpha", "--references", "max", "-o", str(out),
                 "--montage", "2", "--figures", "png,pdf,svg"]) == 0
    for stem in [out / "montage", *(out / "bars" / m for m in MEASURES)]:
        png = cv2.imread(str(stem.with_suffix(".png")))
        assert png is not None and png.shape[0] > 100 and png.shape[1] > 100, stem
        assert stem.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
        assert ET.parse(stem.with_suffix(".svg")).getroot().tag.endswith("svg")
    captured = capsys.readouterr()
    assert "scoring" not in captured.err and "\r" not in captured.err  # not a terminal: no bar
    assert f"{BEST} best of the methods per column" in captured.out


def test_the_progress_bar_is_on_stderr_when_asked_and_absent_when_piped(tmp_path, capsys):
    _pair_with_a_hot_square(tmp_path / "set", "a")
    out = tmp_path / "out"
    common = ["eval", str(tmp_path / "set"), "--modes", "alpha", "--references", "none", "-o", str(out),
              "--figures", "none"]
    assert main([*common, "--progress"]) == 0
    forced = capsys.readouterr()
    assert "scoring" in forced.err and "1/1" in forced.err and "scoring" not in forced.out
    assert main(common) == 0
    piped = capsys.readouterr()
    assert "scoring" not in piped.err and "\r" not in piped.err + piped.out
    assert "set (1 pair)" in piped.out


def test_figures_asked_for_in_an_unknown_format_is_one_line(tmp_path, capsys):
    _pair_with_a_hot_square(tmp_path / "set", "a")
    assert main(["eval", str(tmp_path / "set"), "-o", str(tmp_path / "out"), "--figures", "png,gif"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--figures: unknown gif" in err


#: The command line with matplotlib made unimportable (as where the figures extra is not installed).
_WITHOUT_MATPLOTLIB = ("import sys\nsys.modules['matplotlib'] = None\n"
                       "from streamfuse.cli import main\nsys.exit(main(sys.argv[1:]))")


def test_without_matplotlib_asked_figures_name_the_extra_and_auto_skips_them(tmp_path):
    _pair_with_a_hot_square(tmp_path / "set", "a")
    common = [sys.executable, "-c", _WITHOUT_MATPLOTLIB, "eval", str(tmp_path / "set"), "--modes", "alpha",
              "--references", "none", "-o", str(tmp_path / "out")]
    asked = subprocess.run([*common, "--figures", "pdf"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert asked.returncode == 2 and asked.stderr.count("\n") == 1
    assert "matplotlib" in asked.stderr and ".[figures]" in asked.stderr and not (tmp_path / "out").exists()
    auto = subprocess.run(common, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert auto.returncode == 0, auto.stderr
    assert "no figures" in auto.stderr and ".[figures]" in auto.stderr
    assert (tmp_path / "out" / "scores.csv").exists() and not list((tmp_path / "out").glob("montage.*"))
