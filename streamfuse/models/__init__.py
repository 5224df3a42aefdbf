"""Fusion networks: one architecture per file, `nn.Module`s only (no I/O, no config parsing).

They are chosen by name through `streamfuse.fuse.FUSION_MODES`, which wraps each in a Fuser;
torch is imported only when one of them is used. `lite.py` also holds its full-size formula in
numpy/OpenCV (the per-frame path) beside the torch one (training).
"""
