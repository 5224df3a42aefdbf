"""Exceptions named after the failure. The CLI prints `str(exc)` as one line, no traceback.

`UsageError` and its subclasses mean the user can fix it before running (exit code 2);
`RuntimeFailure` means the run started and something broke on the way (exit code 1),
after everything already fused has been written out.
"""


class StreamfuseError(Exception):
    """Base of every error streamfuse reports to the user as one line."""

    exit_code = 1


class UsageError(StreamfuseError):
    """A command line, rig file, calibration file or input that cannot work as given."""

    exit_code = 2


class RigError(UsageError):
    """A rig file is malformed: unknown key, wrong type, impossible value, missing file."""


class SourceError(UsageError):
    """A camera, stream or file cannot be opened or does not deliver what the rig says."""


class RuntimeFailure(StreamfuseError):
    """The pipeline ran and then failed (a corrupt video, a full disk, a dead camera)."""


#: Words of an error line longer than this (an echoed 100 KB value) are cut.
MAX_WORD = 100


def one_line(message: str) -> str:
    """`message` as the single readable line the CLI prints: line breaks become spaces and
    any over-long word (an echoed value) is cut to its start and its length."""
    words = " ".join(message.split()).split(" ")
    return " ".join(w if len(w) <= MAX_WORD else f"{w[:60]}...({len(w)} characters)" for w in words)


#: How to get torch (training, the `spg` mode, semantic priors); the base install has none.
LEARN_EXTRA = "pip install -e '.[learn]' (or pip install 'streamfuse[learn]')"


def needs_torch(what: str) -> UsageError:
    """The one-line error for `what` (e.g. "train") run where torch is not installed."""
    return UsageError(f"{what}: needs torch, from the learn extra: {LEARN_EXTRA}")
