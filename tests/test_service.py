"""`streamfuse service`: the unit it writes, where, what it refuses; and the run's log lines."""
from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, streamfuse, write_demo_rig

from streamfuse.cli import main
from streamfuse.cli.unit import MARKER


def _rig(folder: Path, name: str = "demo.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_demo_rig(folder / name)


def _parse(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(text)
    return unit


def _install(capsys, *args) -> tuple[int, str, str]:
    code = main(["service", "install", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_print_gives_a_unit_with_absolute_paths_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    rig = _rig(tmp_path / "rigs")
    for user, wanted_by in ((True, "default.target"), (False, "multi-user.target")):
        code, text, _ = _install(capsys, rig, "--print", *(["--user"] if user else []))
        assert code == 0 and text.startswith(MARKER)
        unit = _parse(text)
        command = shlex.split(unit["Service"]["ExecStart"])
        assert command[:4] == [os.path.abspath(sys.executable), "-m", "streamfuse", "run"]
        assert command[4] == str(rig.resolve()) and os.path.isabs(command[0])
        assert unit["Service"]["Restart"] == "on-failure" and int(unit["Service"]["RestartSec"]) > 0
        assert int(unit["Unit"]["StartLimitBurst"]) > 1 and int(unit["Unit"]["StartLimitIntervalSec"]) > 0
        assert unit["Service"]["WorkingDirectory"] == str(rig.parent.resolve())
        assert unit["Service"]["SyslogIdentifier"] == "streamfuse-demo"
        assert unit["Install"]["WantedBy"] == wanted_by
        assert ("network-online.target" in unit["Unit"].get("After", "")) is not user
    assert not (tmp_path / "config").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rigs"]


def test_odd_paths_are_quoted_and_escaped_for_systemd(tmp_path, capsys):
    rig = _rig(tmp_path / "my rigs 100% $HOME")
    code, text, _ = _install(capsys, rig, "--print", "--name", "odd")
    assert code == 0
    exec_start = _parse(text)["Service"]["ExecStart"]
    assert f'"{rig.resolve()}"'.replace("%", "%%").replace("$", "$$") in exec_start
    assert _parse(text)["Service"]["WorkingDirectory"] == str(rig.parent.resolve()).replace("%", "%%")


def test_install_refuses_a_different_unit_without_force_and_uninstall_removes_it(tmp_path, capsys):
    rig, units = _rig(tmp_path / "rigs"), tmp_path / "units"
    units.mkdir()
    code, out, _ = _install(capsys, rig, "--unit-dir", units)
    path = units / "streamfuse-demo.service"
    assert code == 0 and f"wrote {path}" in out
    assert "systemctl daemon-reload" in out and "systemctl enable --now streamfuse-demo" in out
    assert "journalctl -u streamfuse-demo -f" in out
    first = path.read_text()
    assert _install(capsys, rig, "--unit-dir", units)[1].startswith(f"{path}: already installed, unchanged")

    code, _, err = _install(capsys, rig, "--unit-dir", units, "--workdir", tmp_path)
    assert code == 2 and err.count("\n") == 1 and "exists and differs" in err and "--force" in err
    assert path.read_text() == first
    assert _install(capsys, rig, "--unit-dir", units, "--workdir", tmp_path, "--force")[0] == 0
    assert _parse(path.read_text())["Service"]["WorkingDirectory"] == str(tmp_path)

    (units / "multi-user.target.wants").mkdir()
    (units / "multi-user.target.wants" / path.name).symlink_to(path)  # what `systemctl enable` makes
    assert main(["service", "uninstall", str(rig), "--unit-dir", str(units)]) == 0
    assert "systemctl daemon-reload" in capsys.readouterr().out
    assert sorted(p.name for p in units.rglob("*")) == ["multi-user.target.wants"]
    assert main(["service", "uninstall", "streamfuse-demo", "--unit-dir", str(units)]) == 2
    assert "no such unit" in capsys.readouterr().err

    (units / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    assert main(["service", "uninstall", "other", "--unit-dir", str(units)]) == 2
    assert "not written by `streamfuse service install`" in capsys.readouterr().err
    assert (units / "other.service").exists()


def test_a_bad_rig_or_name_is_one_line_exit_2_and_writes_nothing(tmp_path):
    rig, units = _rig(tmp_path / "rigs"), tmp_path / "units"
    units.mkdir()
    rig.write_text(rig.read_text() + "colour: blue\n")
    for args, expected in (([rig], "colour"), ([tmp_path / "nope.yaml"], "rig file not found"),
                           ([_rig(tmp_path / "ok"), "--name", "a b"], "--name: 'a b' is not a unit name"),
                           ([_rig(tmp_path / "ok"), "--workdir", tmp_path / "gone"], "--workdir")):
        result = streamfuse("service", "install", *args, "--unit-dir", units)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr and "Traceback" not in result.stderr
    assert list(units.iterdir()) == []


#: Runs a command's handler with the effective user id of nobody when started as root; the
#: arguments are parsed first (root's Python installation may not be readable by nobody).
_AS_NOBODY = """import os, sys
from streamfuse.cli import parser
from streamfuse.errors import StreamfuseError
args = parser().parse_args(sys.argv[1:])
if os.geteuid() == 0:
    os.seteuid(65534)
try:
    sys.exit(args.handler(args))
except StreamfuseError as exc:
    print(f"streamfuse: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def test_a_system_unit_needs_root_and_says_so_in_one_line(tmp_path):
    rig = _rig(tmp_path / "rigs")
    for action in (["install", str(rig)], ["uninstall", "streamfuse-demo"]):
        result = subprocess.run([sys.executable, "-c", _AS_NOBODY, "service", *action], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1
        assert "needs root" in result.stderr and "sudo" in result.stderr and "--user" in result.stderr


def test_a_user_unit_goes_in_the_users_systemd_folder_with_the_linger_hint(tmp_path):
    rig = _rig(tmp_path / "rigs")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    result = streamfuse("service", "install", rig, "--user", env=env)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "config" / "systemd" / "user" / "streamfuse-demo.service"
    assert _parse(path.read_text())["Install"]["WantedBy"] == "default.target"
    assert "systemctl --user enable --now streamfuse-demo" in result.stdout
    assert "journalctl --user -u streamfuse-demo -f" in result.stdout
    assert "loginctl enable-linger" in result.stdout or "lingering is on" in result.stdout
    assert streamfuse("service", "uninstall", "streamfuse-demo", "--user", env=env).returncode == 0
    assert not path.exists()


def test_systemd_analyze_verifies_the_units(tmp_path, capsys):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    rig, units = _rig(tmp_path / "my rigs 100%"), tmp_path / "units"
    units.mkdir()
    assert _install(capsys, rig, "--unit-dir", units, "--name", "sys")[0] == 0
    assert _install(capsys, rig, "--unit-dir", units, "--name", "usr", "--user")[0] == 0
    for name in ("sys", "usr"):
        # System mode for both: a user manager is not running here, and the syntax is the same.
        result = subprocess.run(["systemd-analyze", "verify", str(units / f"{name}.service")],
                                capture_output=True, text=True, timeout=60)
        about_ours = [line for line in (result.stdout + result.stderr).splitlines() if f"{name}.service" in line]
        assert result.returncode == 0 and not about_ours, result.stdout + result.stderr


_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d streamfuse: \S")


def test_a_piped_run_logs_one_line_per_event_without_carriage_returns(tmp_path):
    rig = write_demo_rig(tmp_path / "demo.yaml")
    result = streamfuse("run", rig, "--frames", 30, "--status-every", "0.2")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "\r" not in output and "\x1b" not in output
    lines = result.stderr.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("demo: 30 fused frames"))
    assert summary >= 1 and all(_LOG_LINE.match(line) for line in lines[:summary]), lines[:summary]
    assert sum(": status: fps" in line for line in lines[:summary]) >= 1
    quiet = streamfuse("run", rig, "--frames", 10, "--status-every", "0")
    assert "status:" not in quiet.stderr and "\r" not in quiet.stderr


def test_under_journald_lines_carry_a_priority_and_no_timestamp(tmp_path):
    rig = write_demo_rig(tmp_path / "demo.yaml")
    log = tmp_path / "journal.log"
    with open(log, "w") as stream:
        st = os.fstat(stream.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        subprocess.run([sys.executable, "-m", "streamfuse", "run", str(rig), "--frames", "30",
                        "--status-every", "0.2"], cwd=REPO, stdout=stream, stderr=stream, env=env,
                       timeout=120, check=True)
    lines = log.read_text().splitlines()
    status = [line for line in lines if "status: fps" in line]
    assert status and all(line.startswith("<6>status: fps") for line in status)
    assert not any(re.match(r"\d{4}-\d\d-\d\d", line) for line in lines)
    assert "\r" not in log.read_text()
