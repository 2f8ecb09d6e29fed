"""Missing-slice synthesis evaluation of a cardiac (short-axis cine) dataset (``codebrain_evaluate_slices``).

Modules: ``scenarios`` (the missing runs, image quality of the filled slices, Dice), ``evaluate`` (the run over
the fold's held-out cases, with the segmentation harness of ``evaluation.segmentation`` for the Dice columns),
``report`` (Markdown / CSV / JSON tables).
"""
