"""Registration: the IR image warped into the visible camera's pixel frame, and how the mapping is found.

    geometry.py     pure geometry: the pixel convention, `H_vis_from_ir` helpers, the parallax model
    calibration.py  calibration files: `Calibration`, `load_calibration`, `write_calibration`
    registrar.py    `warp_ir_to_vis` and `Registrar`, the stage the main loop calls per frame (cpu or gpu)
    gpu.py          the GPU warp with cupy
    targetfree.py   the target-free cross-modal estimator (ordinary scenes, no calibration target)
    refine.py       live refinement: that estimator in the background of a running rig
"""
