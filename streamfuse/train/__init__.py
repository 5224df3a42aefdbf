"""Training the fusion networks (`streamfuse train`), off the per-frame path; torch throughout.

    data.py        clips and synthetic scenes -> random crops (only data shipped weights may use)
    losses.py      differentiable loss terms: SSIM, gradients, SCD, VIF and Qabf as the toolbox computes them
    objectives.py  what each trainable network minimises (lite: the measures; spg: SPGFusion-style)
    clipfusion.py  CLIPFusion's learned CLIP prompts as a label-free target
    loop.py        TrainConfig and the loop: checkpoints, exact resume
"""
