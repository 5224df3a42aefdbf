"""Rig files: every shipped rig loads; every malformed rig fails with one readable line.

Each malformed rig is the demo rig with exactly one thing broken (the unbroken copy is checked
to load), so each failure is caused by the thing the test broke. A few of them also go
through the real command line, which must print one `streamfuse: error:` line and exit 2.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamfuse.errors import RigError
from streamfuse.rig import RigConfig, load_rig

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RIGS = sorted((REPO / "rigs").glob("*.yaml"))
DEMO_CALIBRATION = REPO / "calibration" / "demo.yaml"


def streamfuse(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamfuse", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def assert_one_line_usage_error(proc: subprocess.CompletedProcess) -> str:
    """Exit 2, a single `streamfuse: error:` line on stderr, no traceback; returns that line."""
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("streamfuse: error:"), proc.stderr
    return lines[0]


# --- the shipped rigs --------------------------------------------------------------------------

@pytest.mark.parametrize("rig_path", RIGS, ids=[p.stem for p in RIGS])
def test_every_shipped_rig_loads(rig_path: Path):
    if rig_path.name == "replay.yaml" and not DATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{DATA} is missing on CI; rigs/replay.yaml replays the clip stored there")
        pytest.skip(f"rigs/replay.yaml replays a clip from {DATA}, which is not beside this checkout")
    rig = load_rig(rig_path)
    assert isinstance(rig, RigConfig)
    assert rig.path == rig_path
    assert rig.name == yaml.safe_load(rig_path.read_text()).get("name", rig_path.stem)
    for src in (rig.ir, rig.vis):
        if hasattr(src, "path"):   # replay paths are resolved against the rig's folder
            assert src.path.is_absolute() and src.path.exists()


def test_the_demo_rig_has_what_its_file_says():
    data = yaml.safe_load((REPO / "rigs" / "demo.yaml").read_text())
    rig = load_rig(REPO / "rigs" / "demo.yaml")
    for cfg, written in ((rig.ir, data["sources"]["ir"]), (rig.vis, data["sources"]["vis"])):
        for key, value in written.items():
            assert getattr(cfg, key) == (tuple(value) if isinstance(value, list) else value), key
    assert rig.calibration_path.resolve() == (REPO / "rigs" / data["calibration"]).resolve()
    assert rig.calibration.H_vis_from_ir.shape == (3, 3)
    assert rig.sync.tolerance_ms == data["sync"]["tolerance_ms"]
    for key, value in data["fusion"].items():
        assert getattr(rig.fusion, key) == value, key
    assert len(rig.sinks) == len(data["sinks"])


def test_with_mode_replaces_only_the_fusion_mode():
    rig = load_rig(REPO / "rigs" / "demo.yaml")
    alpha = rig.with_mode("alpha")
    assert alpha.fusion.mode == "alpha"
    assert alpha.fusion.strength == rig.fusion.strength and alpha.fusion.palette == rig.fusion.palette
    assert rig.fusion.mode == "lite"   # the original is untouched
    with pytest.raises(RigError, match="--mode") as info:
        rig.with_mode("nope")
    assert "'nope'" in str(info.value) and "alpha" in str(info.value)


# --- malformed rigs ----------------------------------------------------------------------------

def demo_rig() -> dict:
    """The demo rig as a dict, with its calibration made absolute so it loads from anywhere."""
    data = yaml.safe_load((REPO / "rigs" / "demo.yaml").read_text())
    data["calibration"] = str(DEMO_CALIBRATION)
    return data


def write_calibration(tmp: Path, H) -> Path:
    data = yaml.safe_load(DEMO_CALIBRATION.read_text())
    data["H_vis_from_ir"] = H
    path = tmp / "cal.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _set(data: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def _without(key):
    def edit(data, tmp):
        del data[key]
        return data
    return edit


def _setting(dotted, value):
    return lambda data, tmp: _set(data, dotted, value)


def _sink(**fields):
    def edit(data, tmp):
        data["sinks"] = [{"type": "mp4", "path": str(tmp / "out.mp4"), **fields}]
        return data
    return edit


def _missing_sink_folder(data, tmp):
    data["sinks"] = [{"type": "mp4", "path": str(tmp / "no-such-folder" / "out.mp4")}]
    return data


def _missing_replay(data, tmp):
    data["sources"] = {"ir": {"type": "replay", "path": "missing-ir.mp4"},
                       "vis": {"type": "replay", "path": "missing-vis.mp4"}}
    return data


def _calibration(H):
    def edit(data, tmp):
        data["calibration"] = str(write_calibration(tmp, H))
        return data
    return edit


def _missing_calibration(data, tmp):
    data["calibration"] = str(tmp / "no-such-calibration.yaml")
    return data


def _text(text):
    return lambda data, tmp: text


def _fifo(tmp: Path) -> Path:
    path = tmp / "camera.fifo"
    if not path.exists():
        os.mkfifo(path)
    return path


def _replay_from(data: dict, path: Path) -> dict:
    data["sources"] = {"ir": {"type": "replay", "path": str(path)}, "vis": {"type": "replay", "path": str(path)}}
    return data


#: Nine levels of nine aliases each: 9**9 names once expanded (the "billion laughs").
_ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)) + "name: *a9\n"
SINGULAR = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 0.0, 1.0]]   # row 2 = 2 x row 1
TWO_BY_THREE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]

# (id, edit(data, tmp) -> rig dict or raw YAML text, substrings the message must contain,
#  whether the case also runs through the command line). "{rig}"/"{tmp}" are filled in.
CASES = [
    ("unknown-top-level-key", _setting("colour", "red"), ["{rig}", "colour", "unknown key"], True),
    ("unknown-nested-key", _setting("sync.toleranse_ms", 20),
     ["{rig}", "sync.toleranse_ms", "did you mean 'tolerance_ms'"], True),
    ("wrong-type", _setting("sources.ir.fps", "fast"),
     ["{rig}", "sources.ir.fps", "expected a number", "'fast'"], True),
    ("negative-fps", _setting("sources.ir.fps", -3), ["{rig}", "sources.ir.fps", "-3"], False),
    ("crf-out-of-range", _sink(crf=99), ["{rig}", "sinks[0].crf", "99"], False),
    ("strength-out-of-range", _setting("fusion.strength", 2.0), ["{rig}", "fusion.strength", "2.0"], False),
    ("zero-tolerance", _setting("sync.tolerance_ms", 0), ["{rig}", "sync.tolerance_ms"], False),
    ("missing-sources", _without("sources"), ["{rig}", "sources", "ir", "vis"], False),
    ("unknown-source-type", _setting("sources.ir.type", "thermalcam"),
     ["{rig}", "sources.ir.type", "'thermalcam'", "synthetic"], False),
    ("missing-replay-file", _missing_replay, ["{rig}", "sources.ir.path", "{tmp}/missing-ir.mp4", "does not exist"],
     True),
    ("missing-calibration-file", _missing_calibration,
     ["{tmp}/no-such-calibration.yaml", "calibration", "not found"], True),
    ("singular-calibration", _calibration(SINGULAR), ["{tmp}/cal.yaml", "H_vis_from_ir", "singular"], False),
    ("calibration-2x3", _calibration(TWO_BY_THREE), ["{tmp}/cal.yaml", "H_vis_from_ir", "3x3", "(2, 3)"], False),
    ("yaml-syntax-error", _text("name: demo\ncalibration: null\n\tsync: 1\n"),
     ["{rig}", "not valid YAML", "line 3"], True),
    ("empty-file", _text(""), ["{rig}", "expected a mapping", "sources"], True),
    ("alias-bomb", lambda data, tmp: _ALIAS_BOMB + yaml.safe_dump(data, sort_keys=False),
     ["{rig}", "expands to over"], True),
    ("nested-too-deep", lambda data, tmp: "junk: " + "[" * 3000 + "]" * 3000 + "\n", ["{rig}", "nested more than"], True),
    ("too-large", lambda data, tmp: "# " + "x" * (2 << 20) + "\n", ["{rig}", "larger than"], True),
    ("negative-seed", _setting("scene.seed", -1), ["{rig}", "scene.seed", "from 0"], True),
    ("nul-in-sink-path", _setting("sinks", [{"type": "mp4", "path": "a\x00b.mp4"}]), ["{rig}", "sinks[0].path", "NUL"],
     True),
    ("name-too-long", _setting("calibration", "x" * 300 + ".yaml"), ["{rig}", "calibration", "too long"], True),
    ("fifo-replay-path", lambda data, tmp: _replay_from(data, _fifo(tmp)), ["{rig}", "sources.ir.path", "FIFO"], True),
    ("clocks-never-pair", _setting("sources.vis.clock_offset_ms", -1_000_000),
     ["{rig}", "sources", "no pair would form"], True),
    ("unknown-source-role", _setting("sources.thermal", {"type": "synthetic"}), ["{rig}", "sources.thermal", "unknown key"],
     True),
    ("unknown-prompt-key", _setting("priors", {"prompts": [{"text": "person", "colour": 1}]}),
     ["{rig}", "priors.prompts[0].colour", "unknown key", "text, weight"], True),
    ("prior-size-misspelt", _setting("priors", {"size": "nativ"}),
     ["{rig}", "priors.size", "32 to 1024 pixels, or native", "'nativ'"], True),
    ("prior-size-zero", _setting("priors", {"size": 0}), ["{rig}", "priors.size", "or native", "got 0"], False),
    ("prior-size-negative", _setting("priors", {"size": -1}), ["{rig}", "priors.size", "or native", "got -1"], False),
    ("calibration-unreadable", _setting("calibration", "/proc/self/mem"), ["{rig}", "/proc/self/mem", "kernel file"], True),
    ("unhashable-source-type", _setting("sources.ir.type", {"a": 1}), ["{rig}", "sources.ir.type", "unknown type"], True),
    ("unhashable-sink-type", _setting("sinks", [{"type": []}]), ["{rig}", "sinks[0].type", "unknown type"], True),
    ("list-at-top-level", _text("- name: demo\n- sources: {}\n"), ["{rig}", "expected a mapping", "sources"], False),
    ("sink-folder-missing", _missing_sink_folder, ["{rig}", "sinks[0].path", "{tmp}/no-such-folder", "does not exist"],
     True),
]
CLI_CASES = [case for case in CASES if case[3]]


def write_rig(tmp: Path, edit) -> Path:
    content = edit(demo_rig(), tmp)
    path = tmp / "rig.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def expected_parts(parts: list[str], rig: Path, tmp: Path) -> list[str]:
    return [p.replace("{rig}", str(rig)).replace("{tmp}", str(tmp)) for p in parts]


def test_the_unbroken_demo_copy_loads(tmp_path: Path):
    """The control for every malformed case below: before breaking it, the copy is fine."""
    rig = load_rig(write_rig(tmp_path, lambda data, tmp: data))
    assert rig.name == "demo" and rig.calibration is not None
    rig = load_rig(write_rig(tmp_path, _sink(crf=18)))   # the sink edits are fine when valid
    assert rig.sinks[0].crf == 18 and rig.sinks[0].path == tmp_path / "out.mp4"


@pytest.mark.parametrize("edit, parts", [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_rig_raises_one_line_naming_file_and_key(tmp_path: Path, edit, parts):
    rig_path = write_rig(tmp_path, edit)
    with pytest.raises(RigError) as info:
        load_rig(rig_path)
    message = str(info.value)
    assert "\n" not in message
    for part in expected_parts(parts, rig_path, tmp_path):
        assert part in message


@pytest.mark.parametrize("edit, parts", [c[1:3] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_check_command_reports_a_malformed_rig_in_one_line(tmp_path: Path, edit, parts):
    rig_path = write_rig(tmp_path, edit)
    line = assert_one_line_usage_error(streamfuse("check", rig_path))
    for part in expected_parts(parts, rig_path, tmp_path):
        assert part in line


def test_check_command_on_a_missing_rig_file(tmp_path: Path):
    line = assert_one_line_usage_error(streamfuse("check", tmp_path / "absent.yaml"))
    assert str(tmp_path / "absent.yaml") in line and "not found" in line


@pytest.mark.parametrize("args, option", [(["--frames", "0"], "--frames"), (["--duration", "abc"], "--duration")])
def test_run_rejects_bad_limits_before_running(args, option):
    proc = streamfuse("run", "rigs/demo.yaml", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[-1].startswith(f"streamfuse run: error: argument {option}")


# --- regressions -------------------------------------------------------------------------------

def test_calibration_file_that_is_not_text(tmp_path: Path):
    cal = tmp_path / "cal.yaml"
    cal.write_bytes(b"\xff\xfe\x00H_vis_from_ir")   # e.g. a binary file named by mistake
    rig_path = write_rig(tmp_path, lambda data, tmp: {**data, "calibration": str(cal)})
    with pytest.raises(RigError, match="cal.yaml"):
        load_rig(rig_path)


@pytest.mark.parametrize("key, value", [("sinks", {}), ("sync", 0)])
def test_falsy_section_of_the_wrong_type_is_rejected(tmp_path: Path, key, value):
    rig_path = write_rig(tmp_path, _setting(key, value))
    with pytest.raises(RigError, match=key):
        load_rig(rig_path)


# --- priors: the DINO follows the fusion mode unless the rig names one -------------------------

def _priors_rig(tmp: Path, mode: str, priors: dict) -> Path:
    def edit(data, tmp):
        data["fusion"] = {**(data.get("fusion") or {}), "mode": mode}
        data["priors"] = priors
        return data
    return write_rig(tmp, edit)


@pytest.mark.parametrize("priors", [{}, {"dino": {"weights": "random"}}, {"size": "native"}])
def test_spg_defaults_to_dino_vit_b16_and_the_other_modes_to_vit_s16(tmp_path: Path, priors):
    spg = load_rig(_priors_rig(tmp_path, "spg", priors))
    assert spg.priors.dino.model == "vit_base_patch16_224"
    assert spg.priors.dino.weights == priors.get("dino", {}).get("weights", "dino")
    assert "dino=vit_base_patch16_224/" in spg.priors.key  # a cached ViT-S prior does not pass for it
    assert load_rig(_priors_rig(tmp_path, "pyramid", priors)).priors.dino.model == "vit_small_patch16_224"
    # --mode follows too, both ways
    assert spg.with_mode("alpha").priors.dino.model == "vit_small_patch16_224"
    assert spg.with_mode("alpha").with_mode("spg").priors.dino.model == "vit_base_patch16_224"


def test_an_explicit_dino_model_wins_over_the_modes_default(tmp_path: Path):
    small = load_rig(_priors_rig(tmp_path, "spg", {"dino": {"model": "vit_small_patch16_224"}}))
    assert small.priors.dino.model == "vit_small_patch16_224"
    assert small.with_mode("pyramid").with_mode("spg").priors.dino.model == "vit_small_patch16_224"
    base = load_rig(_priors_rig(tmp_path, "alpha", {"dino": {"model": "vit_base_patch16_224"}}))
    assert base.priors.dino.model == "vit_base_patch16_224"
    assert load_rig(_priors_rig(tmp_path, "spg", {})).with_mode("lite").priors is not None
    no_priors = load_rig(write_rig(tmp_path, lambda data, tmp: data))
    assert no_priors.priors is None and no_priors.with_mode("spg").priors is None


def test_readme_and_the_priors_rig_say_which_dino_spg_gets():
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `priors.dino.model`"))
    assert "vit_base_patch16_224" in row and "spg" in row and "vit_small_patch16_224" in row
    rig_file = (REPO / "rigs" / "priors.yaml").read_text().splitlines()
    dino_line = next(line for line in rig_file if line.strip().startswith("dino:"))
    assert "vit_base_patch16_224" in dino_line and "spg" in dino_line
