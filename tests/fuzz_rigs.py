"""Malformed rig files made from the shipped rigs, run through `streamfuse check` and `run --frames 3`.

Every case must end in exit 0 (the change happened to be valid) or exit 2 with one line on
stderr that names the rig file, within a time limit: never a traceback, never a hang.

    python tests/fuzz_rigs.py [--cases N] [--seed S] [--run-share F]

prints the count of each outcome and the first line of every failing case. tests/test_rig_fuzz.py
runs a seeded sample of it on every CI run. Everything happens in a temporary folder; the
only addresses a mutated rig may name are loopback ones, and only `check` (which opens no
device) is given rigs with cameras or network streams.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import copy
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RIGS = sorted((REPO / "rigs").glob("*.yaml"))
#: Rigs whose sources `run` may open here (synthetic or files); the others are `check`ed only.
RUNNABLE = {"demo", "bench", "replay"}
#: Seconds a case may take before it counts as a hang.
CHECK_TIMEOUT_S, RUN_TIMEOUT_S = 20, 45


def bad_values(tmp: Path) -> list:
    """Values a careless or hostile rig file might hold."""
    fifo = tmp / "fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    deep_list: list = []
    for _ in range(200):
        deep_list = [deep_list]
    return [None, True, False, 0, -1, -(2 ** 63), 2 ** 64, 1e308, -1e308, float("nan"), float("inf"), 0.5, "", " ",
            "x" * 100_000, "a\x00b", "null", "rtsp://127.0.0.1:9/none", "/proc/self/mem", "/dev/zero", "/dev/null",
            "/", str(fifo), str(tmp), str(tmp / "missing.yaml"), "../../../../etc/passwd", [], [1, 2], [[1], [2]],
            {}, {"a": 1}, {"type": "synthetic"}, deep_list, "é∂ƒ©", "🙂", [None], {"": None}, "-1", "1e400"]


def _paths(node, prefix=()):
    """Every (key path) of a nested mapping/list, leaves and sections alike."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _absolute(data: dict, base: Path) -> dict:
    """The rig with its relative file paths made absolute, so that it works from another folder."""
    data = copy.deepcopy(data)
    if isinstance(data.get("calibration"), str):
        data["calibration"] = str((base / data["calibration"]).resolve())
    for role in ("ir", "vis"):
        source = data["sources"][role]
        if isinstance(source.get("path"), str):
            source["path"] = str((base / source["path"]).resolve())
    return data


def mutate(data: dict, rng: random.Random, values: list, tmp: Path) -> str:
    """One malformed version of `data`, as YAML text."""
    data = copy.deepcopy(data)
    for sink in data.get("sinks") or []:
        if isinstance(sink, dict) and "path" in sink:
            sink["path"] = str(tmp / "out.mp4")
    kind = rng.choice(["value", "value", "value", "delete", "unknown", "wrap", "text"])
    paths = [p for p in _paths(data) if p]
    path = rng.choice(paths)
    parent, key = _get(data, path[:-1]), path[-1]
    if kind == "value":
        parent[key] = copy.deepcopy(rng.choice(values))
    elif kind == "delete":
        del parent[key]
    elif kind == "unknown":
        target = _get(data, path) if isinstance(_get(data, path), dict) else parent
        if isinstance(target, dict):
            target[rng.choice(["colour", "typo", "tolerance_ms ", "Type", "sources"])] = rng.choice(values[:12])
    elif kind == "wrap":
        parent[key] = [parent[key]]
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1_000_000)
    if kind == "text":
        cut = rng.randrange(len(text))
        text = rng.choice([
            text[:cut],                                        # a truncated file
            text[:cut] + "\t" + text[cut:],                    # a stray tab
            text[:cut] + ": [" + text[cut:],                   # an unclosed bracket
            text + "\n" + text,                                # every key twice
            "\ufeff" + text,                                   # a byte-order mark
            text.replace(":", " =", 1),                        # not YAML syntax
            "a: &a [" + ",".join(["x"] * 50) + "]\n" + "".join(  # an alias bomb
                f"a{i}: &a{i} [{','.join(['*a' + (str(i - 1) if i > 1 else '')] * 50)}]\n" for i in range(1, 6)) + text,
        ])
    return text


def cases(count: int, seed: int, run_share: float, tmp: Path) -> list[tuple[str, str, str]]:
    """`count` (label, rig text, command) cases, reproducible from `seed`."""
    rng = random.Random(seed)
    values = bad_values(tmp)
    base = [(rig.stem, _absolute(yaml.safe_load(rig.read_text()), rig.parent)) for rig in RIGS]
    out = []
    for i in range(count):
        name, data = rng.choice(base)
        command = "run" if name in RUNNABLE and rng.random() < run_share else "check"
        out.append((f"{i:04d}-{name}-{command}", mutate(data, rng, values, tmp), command))
    return out


def verdict(proc: subprocess.CompletedProcess | None, rig: Path) -> str:
    """'ok', 'usage', or what went wrong."""
    if proc is None:
        return "hang"
    err = proc.stderr.strip()
    if "Traceback" in err:
        return "traceback"
    if proc.returncode == 0:
        return "ok"
    if proc.returncode != 2:
        return f"exit {proc.returncode}"
    if len(err.splitlines()) != 1:
        return "not one line"
    if str(rig) not in err:
        return "rig not named"
    if len(err) > 600:
        return "line too long"
    return "usage"


def run_case(label: str, text: str, command: str, tmp: Path) -> tuple[str, str, str]:
    """(label, verdict, the last stderr line) of one case."""
    rig = tmp / f"{label}.yaml"
    rig.write_bytes(text.encode("utf-8", "surrogatepass"))
    args = [sys.executable, "-m", "streamfuse", command, str(rig)] + (["--frames", "3", "--quiet"] if command == "run" else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S if command == "run"
                              else CHECK_TIMEOUT_S, cwd=tmp, env=env, stdin=subprocess.DEVNULL, errors="replace")
    except subprocess.TimeoutExpired:
        proc = None
    last = proc.stderr.strip().splitlines()[-1][:300] if proc is not None and proc.stderr.strip() else ""
    return label, verdict(proc, rig), last


def fuzz(count: int, seed: int, run_share: float = 0.2, workers: int = 2) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory(prefix="streamfuse-fuzz-") as name:
        tmp = Path(name)
        todo = cases(count, seed, run_share, tmp)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(lambda case: run_case(*case, tmp), todo))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-share", type=float, default=0.2, help="share of runnable rigs given to `run` (0.2)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    results = fuzz(args.cases, args.seed, args.run_share, args.workers)
    counts = collections.Counter(v for _, v, _ in results)
    by_command = collections.Counter((label.rsplit("-", 1)[1], v in ("ok", "usage")) for label, v, _ in results)
    print(f"{len(results)} fuzzed rigs (seed {args.seed}): " + ", ".join(f"{k} {n}" for k, n in counts.most_common()))
    print("  " + ", ".join(f"{cmd} {'fine' if fine else 'FAILED'} {n}" for (cmd, fine), n in sorted(by_command.items())))
    for label, v, last in results:
        if v not in ("ok", "usage"):
            print(f"  {label}: {v}: {last}")
    return 0 if all(v in ("ok", "usage") for _, v, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
