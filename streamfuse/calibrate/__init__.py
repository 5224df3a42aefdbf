"""The calibrate tool (`streamfuse calibrate`): find the IR-to-visible mapping and write a calibration file.

Methods, one module each: `board.py` (a checkerboard or circle grid seen by both cameras),
`points.py` and `click.py` (point pairs from a file or clicked), `grab.py` (raw pairs from
a rig's cameras to calibrate from), `report.py` (the accuracy figures of docs/benchmarks.md),
`synthetic.py` (rendered board views). The target-free estimator is a registration stage
(`streamfuse.register.targetfree`), since live refinement runs it too. Every method ends in
`streamfuse.register.calibration.write_calibration`.
"""
