"""Loading a learned fusion mode's weights file, with one-line errors for a missing or foreign file."""
from __future__ import annotations

from pathlib import Path

from streamfuse.errors import UsageError


def load_state(net, path, mode: str, hint: str):
    """`net` with the weights of the file at `path` (what `streamfuse train` writes, or a bare
    state dict), on the CPU. UsageError (one line, ending with `hint`, the fix) if the file
    is not there or does not hold weights of `net`'s shape."""
    import torch  # only the learned modes need it

    if not Path(path).is_file():
        raise UsageError(f"fusion mode {mode}: weights file {path} not found; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"] if "model" in state else state)
    except Exception as exc:  # a corrupt or foreign file: say which, not a traceback
        raise UsageError(f"fusion mode {mode}: {path} does not hold {mode} weights ({exc.__class__.__name__}); "
                         f"{hint}") from None
    return net
