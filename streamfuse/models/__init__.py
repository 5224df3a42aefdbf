"""Fusion networks: one architecture per file, `nn.Module`s only (no I/O, no config parsing).

They are chosen by name through `streamfuse.fuse.FUSION_MODES`, which wraps each in a Fuser;
torch is imported only when one of them is used. `lite.py` also holds its full-size formula in
numpy/OpenCV (the per-frame path) beside the torch one (training).
"""


def load_state(net, path, mode: str, hint: str):
    """`net` with the weights of the file at `path` (what `streamfuse train` writes, or a bare
    state dict), on the CPU. UsageError (one line, ending with `hint`, the fix) if the file
    is not there or does not hold weights of `net`'s shape."""
    from pathlib import Path

    import torch

    from streamfuse.errors import UsageError

    if not Path(path).is_file():
        raise UsageError(f"fusion mode {mode}: weights file {path} not found; {hint}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"] if "model" in state else state)
    except Exception as exc:  # a corrupt or foreign file: say which, not a traceback
        raise UsageError(f"fusion mode {mode}: {path} does not hold {mode} weights ({exc.__class__.__name__}); "
                         f"{hint}") from None
    return net
