"""Loading a learned fusion mode's weights file, with one-line errors for a missing or foreign file.

Two readers of the one file format `streamfuse train` writes (torch.save's zip archive):
`load_state` fills a torch network (training, `spg`); `read_state` returns numpy arrays
without importing torch, so `lite` runs with the base install. Reading the same file both
ways (rather than shipping a converted copy) keeps one weights file per model, so weights a
user trains run at once, and a test checks that both readers give the same numbers.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from streamfuse.errors import UsageError


def load_state(net, path, mode: str, hint: str):
    """`net` with the weights of the file at `path` (what `streamfuse train` writes, or a bare
    state dict), on the CPU. UsageError (one line, ending with `hint`, the fix) if the file
    is not there or does not hold weights of `net`'s shape."""
    import torch  # only training and the spg mode need it

    _check_file(path, mode, hint)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"] if "model" in state else state)
    except Exception as exc:  # a corrupt or foreign file: say which, not a traceback
        raise _foreign(path, mode, hint, exc) from None
    return net


def read_state(path, mode: str, hint: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """{name: float32 array} of the weights file at `path`, read without torch, checked
    against `shapes` ({name: shape}, every name required). UsageError as `load_state`."""
    _check_file(path, mode, hint)
    try:
        state = read_torch_file(path)
        state = state.get("model", state)
        arrays = {name: np.asarray(state[name], np.float32) for name in shapes}
        for name, shape in shapes.items():
            if arrays[name].shape != tuple(shape):
                raise ValueError(f"{name} is {arrays[name].shape}, expected {tuple(shape)}")
    except _UNREADABLE as exc:
        raise _foreign(path, mode, hint, exc) from None
    return arrays


#: What a corrupt or foreign file makes `read_torch_file` or the shape check raise.
_UNREADABLE = (OSError, EOFError, KeyError, ValueError, TypeError, AttributeError, IndexError, StopIteration,
               pickle.UnpicklingError, zipfile.BadZipFile)


def _check_file(path, mode: str, hint: str) -> None:
    if not Path(path).is_file():
        raise UsageError(f"fusion mode {mode}: weights file {path} not found; {hint}")


def _foreign(path, mode: str, hint: str, exc: Exception) -> UsageError:
    return UsageError(f"fusion mode {mode}: {path} does not hold {mode} weights ({exc.__class__.__name__}); {hint}")


#: torch's storage classes (as pickled by torch.save) and the numpy type of their bytes.
_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
             "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
             "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


def read_torch_file(path) -> dict:
    """What `torch.load(path, weights_only=True)` gives for a file of tensors, dicts, lists
    and numbers, with numpy arrays in place of tensors; no torch needed.

    Like weights_only, the unpickler refuses every global but the few a state dict uses, so a
    foreign file cannot run code. Raises (pickle.UnpicklingError, KeyError, zipfile.BadZipFile)
    on anything else.
    """
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next(n for n in names if n.endswith("/data.pkl") or n == "data.pkl")
        root = pkl[: -len("data.pkl")]
        order = root + "byteorder"
        if order in names and archive.read(order).strip() != b"little":
            raise pickle.UnpicklingError("big-endian tensors")
        with archive.open(pkl) as f:
            return _StateUnpickler(f, archive, root).load()


class _Storage:
    def __init__(self, data: np.ndarray):
        self.data = data


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_) -> np.ndarray:
    data = storage.data
    if not size:
        return data[offset].copy()
    view = np.lib.stride_tricks.as_strided(data[offset:], shape=tuple(size),
                                           strides=tuple(s * data.itemsize for s in stride))
    return view.copy()


class _StateUnpickler(pickle.Unpickler):
    def __init__(self, f, archive: zipfile.ZipFile, root: str):
        super().__init__(f)
        self._archive, self._root = archive, root

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            import collections
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGES:
            return _STORAGES[name]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, type):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        raw = self._archive.read(f"{self._root}data/{key}")
        return _Storage(np.frombuffer(raw, dtype=dtype, count=numel))
