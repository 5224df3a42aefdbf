"""What `streamfuse refuse` was given, as one `Input` per job.

An INPUT on the command line is a raw archive (`NAME.raw.mkv`), a folder of them, a clip
folder (an `ir` and a `vis` video file or frame folder, as in M3SVD:
`0111_1716/ir/0000.png ...`), or a folder of clip folders. Each archive and each clip is one
input, named after the archive (without `.raw.mkv`) or the clip folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from streamfuse.capture.archive import ARCHIVE_SUFFIX, METADATA_KEY
from streamfuse.capture.replay import IMAGE_SUFFIXES
from streamfuse.errors import UsageError

#: Files taken as a clip's `ir` or `vis` video (anything else beside them is ignored).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".ts")


@dataclass(frozen=True)
class Input:
    """One job's input.

    Attributes:
        name: the output's name (OUT_DIR/NAME.mp4).
        kind: "archive" (a raw archive) or "clip" (an IR and a visible recording).
        path: the archive, or the clip folder.
        ir, vis: a clip's IR and visible video file or frame folder (None for an archive).
    """

    name: str
    kind: Literal["archive", "clip"]
    path: Path
    ir: Path | None = None
    vis: Path | None = None


def discover(paths: list[Path]) -> list[Input]:
    """The inputs named by `paths`, in the order given (a folder's in name order); UsageError
    for a path that holds none, and for two inputs of the same name."""
    found: list[Input] = []
    for path in paths:
        found.extend(_inputs_of(path))
    seen: dict[str, Path] = {}
    for item in found:
        if item.name in seen:
            raise UsageError(f"{item.path} and {seen[item.name]} would both be written as {item.name}.mp4; "
                             f"refuse them into different output folders")
        seen[item.name] = item.path
    return found


def _inputs_of(path: Path) -> list[Input]:
    if not path.exists():
        raise UsageError(f"{path}: not found; give raw archives (*{ARCHIVE_SUFFIX}), folders of them, "
                         f"or clip folders (an ir and a vis video or frame folder)")
    if path.is_file():
        if not path.name.endswith(ARCHIVE_SUFFIX):
            raise UsageError(f"{path}: not a raw archive (*{ARCHIVE_SUFFIX}); record one with `raw_archive: true`, "
                             f"or give the clip folder that holds an ir and a vis recording")
        return [_archive(path)]
    clip = _clip(path)
    if clip is not None:
        return [clip]
    inside: list[Input] = []
    for child in sorted(path.iterdir()):
        if child.is_file() and child.name.endswith(ARCHIVE_SUFFIX) and not child.name.startswith("."):
            inside.append(_archive(child))
        elif child.is_dir():
            clip = _clip(child)
            if clip is not None:
                inside.append(clip)
    if not inside:
        raise UsageError(f"{path}: no raw archives (*{ARCHIVE_SUFFIX}) and no clip folders (ir and vis videos "
                         f"or frame folders) in it")
    return inside


def _archive(path: Path) -> Input:
    return Input(path.name[:-len(ARCHIVE_SUFFIX)], "archive", path)


def _clip(folder: Path) -> Input | None:
    """The clip in `folder` (its `ir` and `vis` recordings), or None if it is not one."""
    ir, vis = _recording(folder, "ir"), _recording(folder, "vis")
    if ir is None or vis is None:
        return None
    return Input(folder.resolve().name, "clip", folder, ir, vis)


def _recording(folder: Path, role: str) -> Path | None:
    """`folder/role/` with images in it, or a video file `folder/role.<ext>`."""
    sub = folder / role
    if sub.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in sub.iterdir()):
        return sub
    videos = sorted(p for p in folder.glob(f"{role}.*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    return videos[0] if videos else None


def expected_frames(item: Input) -> int:
    """About how many fused frames `item` makes (its visible frames), for the progress bar;
    0 when it cannot be told (a damaged file: the job will say why)."""
    import av

    vis = item.vis if item.kind == "clip" else item.path
    if vis.is_dir():
        return sum(p.suffix.lower() in IMAGE_SUFFIXES for p in vis.iterdir())
    try:
        with av.open(str(vis)) as container:
            if item.kind == "clip":
                return container.streams.video[0].frames or 0
            stream = next(s for s in container.streams if s.metadata.get("title") == "vis")
            fps = json.loads(container.metadata[METADATA_KEY])["cameras"]["vis"]["fps"]
            if container.duration:  # a file closed properly knows its length
                return round(container.duration / 1e6 * float(Fraction(fps)))
            return sum(1 for p in container.demux(stream) if p.size)
    except (av.FFmpegError, OSError, StopIteration, KeyError, ValueError, TypeError):
        return 0
