"""The API twins of the training and imputation commands, on top of the one method registry.

This package sits above ``trainers`` and ``codebrain_seg.inference`` (it names both) and below ``evaluation``.
"""
