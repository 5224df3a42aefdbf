"""The systemd unit that runs a rig as a service: its text and name, nothing else (no I/O).

`streamfuse service install` (cli/service.py) fills a `Unit` and writes `unit_text(unit)`.
The choices a user would otherwise look up:

- Restart=on-failure, RestartSec=RESTART_S: a run that fails (exit 1: a camera gone for good, a
  full disk; exit 2: a camera not yet plugged in at boot) starts again; a stop (SIGTERM, which
  `streamfuse run` takes as "finalize the recording and exit 0") does not.
- StartLimitBurst=START_BURST within StartLimitIntervalSec=START_INTERVAL_S: a rig that cannot
  start at all (a wrong rig file edited after install) is given up on after that many tries in
  a few minutes instead of looping forever; `systemctl reset-failed NAME` clears it.
- TimeoutStopSec=STOP_S: time to close the recording before systemd kills the run.
- Output goes to the journal; `streamfuse run` sees JOURNAL_STREAM and logs without its own
  timestamps (journald adds them) and with syslog priorities (cli/progress.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: The unit's first line: `service uninstall` only removes units that carry it (or --force).
MARKER = "# Written by `streamfuse service install`; remove with `streamfuse service uninstall`."
RESTART_S = 5
START_BURST, START_INTERVAL_S = 10, 300
STOP_S = 30
#: What the run prints to the journal without a terminal: one status line this often (s).
SERVICE_STATUS_EVERY_S = 60
#: Unit names: systemd's allowed characters (no escaping needed), at most this long.
_NAME = re.compile(r"[A-Za-z0-9:_.-]+")
_MAX_NAME = 200


@dataclass(frozen=True)
class Unit:
    """What a rig's service unit says.

    Attributes:
        name: the unit's name without ".service".
        command: ExecStart, absolute paths (the interpreter, the rig).
        workdir: WorkingDirectory (absolute).
        user_unit: a user unit (WantedBy=default.target) rather than a system one.
        run_as: User= of a system unit (None: root).
        environment: Environment= entries.
        description: Description=.
    """

    name: str
    command: tuple[str, ...]
    workdir: Path
    user_unit: bool
    run_as: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    description: str = ""


def check_name(name: str) -> str:
    """`name` without a ".service" suffix; ValueError (the message says why) if systemd
    would not take it as is."""
    name = name.removesuffix(".service")
    if not name or len(name) > _MAX_NAME or not _NAME.fullmatch(name) or name.startswith("-"):
        raise ValueError(f"{name!r} is not a unit name: use letters, digits and : _ . - only "
                         f"(at most {_MAX_NAME}), e.g. streamfuse-demo")
    return name


def default_name(rig_name: str) -> str:
    """streamfuse-<the rig's name>, with characters a unit name cannot hold turned into '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", rig_name).strip("-.") or "rig"
    return f"streamfuse-{cleaned}"[:_MAX_NAME]


def quote(arg: str) -> str:
    """One ExecStart word as systemd parses it: '%' and '$' escaped (specifiers, variables),
    quoted when it holds spaces, quotes or backslashes. ValueError for a line break."""
    if "\n" in arg or "\r" in arg:
        raise ValueError(f"{arg!r} holds a line break, which a unit file cannot")
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if re.search(r'[\s"\'\\;]', escaped) or not escaped:
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _path_value(path: Path) -> str:
    """A path setting (WorkingDirectory): specifiers escaped; spaces need no quoting there."""
    text = str(path)
    if "\n" in text:
        raise ValueError(f"{text!r} holds a line break, which a unit file cannot")
    return text.replace("%", "%%")


def unit_text(unit: Unit) -> str:
    """The unit file's text (ends with a newline)."""
    description = " ".join((unit.description or unit.name).split()).replace("%", "%%")
    lines = [MARKER, "[Unit]", f"Description={description}"]
    if not unit.user_unit:
        # Network cameras need the network; a user manager has no network-online.target.
        lines += ["Wants=network-online.target", "After=network-online.target"]
    lines += [f"StartLimitIntervalSec={START_INTERVAL_S}", f"StartLimitBurst={START_BURST}", "",
              "[Service]", "Type=simple",
              f"ExecStart={' '.join(quote(a) for a in unit.command)}",
              f"WorkingDirectory={_path_value(unit.workdir)}"]
    if unit.run_as and not unit.user_unit:
        lines.append(f"User={unit.run_as}")
    lines += [f"Environment={quote(f'{k}={v}')}" for k, v in unit.environment.items()]
    lines += ["Restart=on-failure", f"RestartSec={RESTART_S}", f"TimeoutStopSec={STOP_S}",
              "KillSignal=SIGTERM", f"SyslogIdentifier={unit.name}", "",
              "[Install]", f"WantedBy={'default.target' if unit.user_unit else 'multi-user.target'}"]
    return "\n".join(lines) + "\n"
