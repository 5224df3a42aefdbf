"""Benchmarks: commands that print numbers (speed targets live here, not in timed tests).

    throughput.py  `streamfuse bench`: fused throughput beside the I/O floor, in the same run
    viewers.py     `streamfuse bench-viewers`: the frame rate with and without viewers and a slow sink
    models.py      `streamfuse bench-models`: the learned fusion's cost per frame
    priors.py      `streamfuse bench-priors`: what semantic priors cost, alone and in a running rig
"""
