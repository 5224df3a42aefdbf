"""Quality: how good a fusion is, off the per-frame path (`streamfuse eval`).

    measures.py  the nine standard image-fusion measures as the MATLAB toolbox computes them
    flicker.py   temporal flicker along optical flow
    evaluate.py  sets and clips of pairs, methods (modes, fused folders, sources), scores, tables, files
    figures.py   the montage and bar charts
"""
