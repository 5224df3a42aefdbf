"""Fusion networks: one architecture per file, `nn.Module`s only (no I/O, no config parsing, no losses).

Each is wrapped in a Fuser by the mode of the same name (`streamfuse.fuse.MODES`); torch is
imported only when one of them is used. `lite.py` also holds its full-size formula in
numpy/OpenCV (the per-frame path) beside the torch one (training). The losses they are
trained with live in `streamfuse.train`.
"""
