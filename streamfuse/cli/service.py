"""`streamfuse service install | uninstall`: a rig as a systemd service, started at boot.

The unit's text is `cli/unit.py`; this module picks its values (the absolute paths of this
Python and of the rig, which is validated as `streamfuse check` does before anything is
written), where it goes (a user unit in ~/.config/systemd/user, no root; or a system unit in
/etc/systemd/system, root), and prints the systemctl commands to run next. It runs no
systemctl itself: enabling a service is the user's call, and the commands are shown.
"""
from __future__ import annotations

import os
import pwd
import sys
from pathlib import Path

import streamfuse
from streamfuse.cli.run import check_rig, naming
from streamfuse.cli.unit import MARKER, SERVICE_STATUS_EVERY_S, Unit, check_name, default_name, unit_text
from streamfuse.errors import UsageError

SYSTEM_DIR = Path("/etc/systemd/system")
_LINGER_DIR = Path("/var/lib/systemd/linger")


def add_parser(sub) -> None:
    s = sub.add_parser("service", help="run a rig at boot as a systemd service (install, uninstall)",
                       description="Write (or remove) a systemd unit that runs a rig at boot and restarts it "
                                   "when it fails. See README.md, 'Running as a service'.")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    i = actions.add_parser("install", help="write the unit of a rig (validated first)")
    i.add_argument("rig", type=Path, help="rig file, e.g. rigs/flir.yaml")
    i.add_argument("--name", help="unit name (default: streamfuse-<the rig's name>)")
    i.add_argument("--workdir", type=Path, metavar="DIR",
                   help="working directory of the run, where relative outputs land (default: the rig's folder)")
    i.add_argument("--run-as", metavar="USER",
                   help="system units: the account the rig runs under (default: the user who ran sudo)")
    i.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    i.add_argument("--force", action="store_true", help="replace an existing unit of that name that differs")
    _where(i)
    i.set_defaults(handler=_cmd_install)
    u = actions.add_parser("uninstall", help="remove a unit written by install")
    u.add_argument("target", metavar="NAME|RIG", help="the unit's name, or the rig it was installed for")
    u.add_argument("--force", action="store_true", help="also remove a unit that install did not write")
    _where(u)
    u.set_defaults(handler=_cmd_uninstall)


def _where(p) -> None:
    p.add_argument("--user", action="store_true",
                   help="a user unit (~/.config/systemd/user, no root) instead of a system one (/etc/systemd/system)")
    p.add_argument("--unit-dir", type=Path, metavar="DIR",
                   help="put the unit in DIR instead (an image being built, tests); no root check")


def _cmd_install(args) -> int:
    folder = None if args.print else unit_dir(args, create=True)  # no root: say so before any work
    with naming(args.rig):
        rig, _ = check_rig(args.rig)
    unit = build_unit(args, rig)
    text = unit_text(unit)
    if folder is None:
        sys.stdout.write(text)
        return 0
    path = folder / f"{unit.name}.service"
    if path.exists() or path.is_symlink():
        if _read(path) == text:
            print(f"{path}: already installed, unchanged")
            print(next_steps(unit.name, args, folder))
            return 0
        if not args.force:
            raise UsageError(f"{path} exists and differs from this rig's unit; --force replaces it, "
                             "--name NAME installs another")
    _write(path, text)
    print(f"wrote {path}")
    print(next_steps(unit.name, args, folder))
    return 0


def build_unit(args, rig) -> Unit:
    """The rig's unit: this interpreter running `streamfuse run RIG`, both as absolute paths."""
    try:
        name = check_name(args.name) if args.name else default_name(rig.name)
    except ValueError as exc:
        raise UsageError(f"--name: {exc}") from None
    workdir = Path(os.path.abspath(args.workdir or rig.path.parent))
    if not workdir.is_dir():
        raise UsageError(f"--workdir {args.workdir}: no such folder; create it or give another")
    if not sys.executable:
        raise UsageError("service install: cannot tell which Python runs streamfuse (sys.executable is empty)")
    # abspath, not resolve: a virtual environment's python is a symlink, and following it would
    # leave the environment (and its packages) behind.
    python = os.path.abspath(sys.executable)
    rig_path = os.path.abspath(rig.path)
    command = (python, "-m", "streamfuse", "run", rig_path, "--status-every", f"{SERVICE_STATUS_EVERY_S:g}")
    env = {"PYTHONUNBUFFERED": "1"}  # stdout to the journal is a socket: unbuffered, lines arrive at once
    package_root = Path(streamfuse.__file__).resolve().parent.parent
    if package_root.name not in ("site-packages", "dist-packages"):
        env["PYTHONPATH"] = str(package_root)  # a checkout: the same code that validated the rig
    unit = Unit(name=name, command=command, workdir=workdir, user_unit=args.user,
                run_as=None if args.user else _run_as(args.run_as), environment=env,
                description=f"streamfuse rig {rig.name} ({rig_path})")
    try:
        unit_text(unit)
    except ValueError as exc:
        raise UsageError(f"service install: {exc}") from None
    return unit


def _run_as(name: str | None) -> str | None:
    """User= of a system unit: --run-as, else whoever ran sudo, else this user; None for root."""
    if name is None:
        name = os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise UsageError(f"--run-as {name}: no such user on this machine") from None
    return None if name == "root" else name


def unit_dir(args, *, create: bool) -> Path:
    """Where the unit goes: --unit-dir, the user's unit folder, or /etc/systemd/system (root)."""
    if args.unit_dir is not None:
        if not args.unit_dir.is_dir():
            raise UsageError(f"--unit-dir {args.unit_dir}: no such folder")
        return Path(os.path.abspath(args.unit_dir))
    if args.user:
        folder = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"{folder}: cannot create it ({exc.strerror or exc})") from None
        return folder
    if os.geteuid() != 0:
        raise UsageError(f"service {args.action}: a system-wide unit goes in {SYSTEM_DIR}, which needs root: "
                         "run it with sudo, or add --user for a user unit (no root)")
    return SYSTEM_DIR


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _write(path: Path, text: str) -> None:
    """Atomically (a crash leaves the old unit or the new one, never half of one), mode 0644."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write it ({exc.strerror or exc})") from None


def next_steps(name: str, args, folder: Path) -> str:
    """The commands that start the service now and at boot, and follow its log."""
    ctl, journal = ("systemctl --user", "journalctl --user") if args.user else ("systemctl", "journalctl")
    steps = [(f"{ctl} daemon-reload", ""),
             (f"{ctl} enable --now {name}", "start it now and at every boot"),
             (f"{journal} -u {name} -f", "follow its log"),
             (f"{ctl} status {name}", "")]
    if args.unit_dir is not None and (args.user or folder != SYSTEM_DIR):
        steps.insert(0, (f"{ctl} link {folder / (name + '.service')}", f"{folder} is not a folder systemd reads"))
    tail = ""
    if args.user:
        user = pwd.getpwuid(os.getuid()).pw_name
        if (_LINGER_DIR / user).exists():
            tail = f"\nlingering is on for {user}: the service starts at boot without a login"
        else:
            steps.append((f"loginctl enable-linger {user}", f"start it at boot, not only while {user} is logged in"))
    width = max(len(command) for command, _ in steps) + 3
    lines = [f"  {command.ljust(width)}# {why}" if why else f"  {command}" for command, why in steps]
    return "next" + ("" if args.user else " (as root)") + ":\n" + "\n".join(lines) + tail


def _cmd_uninstall(args) -> int:
    name = _target_name(args.target)
    folder = unit_dir(args, create=False)
    path = folder / f"{name}.service"
    if not (path.exists() or path.is_symlink()):
        ctl = "systemctl --user" if args.user else "systemctl"
        raise UsageError(f"{path}: no such unit; `{ctl} list-unit-files 'streamfuse-*'` lists the installed ones")
    if not (_read(path) or "").startswith(MARKER) and not args.force:
        raise UsageError(f"{path} was not written by `streamfuse service install`; --force removes it anyway")
    # What `systemctl disable` would remove: the links that start it at boot.
    links = [link for link in folder.glob(f"*.wants/{name}.service") if link.is_symlink()]
    try:
        for link in links:
            link.unlink()
        path.unlink()
    except OSError as exc:
        raise UsageError(f"{path}: cannot remove it ({exc.strerror or exc})") from None
    ctl = "systemctl --user" if args.user else "systemctl"
    print(f"removed {path}" + "".join(f"\nremoved {link}" for link in links))
    print(f"next:\n  {ctl} stop {name}      # if it is running\n  {ctl} daemon-reload")
    return 0


def _target_name(target: str) -> str:
    """The unit name of `NAME|RIG`: a rig file's default name, or the name itself."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        from streamfuse.rig import load_rig

        with naming(path):
            return default_name(load_rig(path).name)
    try:
        return check_name(target)
    except ValueError as exc:
        raise UsageError(f"service uninstall: {exc}") from None
