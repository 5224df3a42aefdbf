"""Re-fuse recordings: raw archives and clip pairs through the same pipeline as `streamfuse run`.

    inputs.py    what the command was given: one `Input` per archive or clip
    job.py       one job: a rig for the input, `pipeline.run`, the MP4 published whole; resume markers
    local.py     jobs in worker processes on this machine
    cluster.py   jobs as Ray tasks (the cluster extra)
    runner.py    all jobs of a command: skip the complete ones, one progress bar, summary.json
"""
