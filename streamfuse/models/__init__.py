"""Fusion networks: one architecture per file, `nn.Module`s only (no I/O, no config parsing, no losses).

Each is wrapped in a Fuser by the mode of the same name (`streamfuse.fuse.MODES`); torch is
imported only when one of them is used. `lite.py` is the per-frame path in numpy/OpenCV
(the network and its full-size formula, no torch); `lite_torch.py` the same in torch, for
training. The losses they are
trained with live in `streamfuse.train`.
"""
