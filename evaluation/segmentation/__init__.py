"""Downstream segmentation evaluation with nnU-Net v2 (``codebrain_evaluate_segmentation``).

Modules: ``nnunet_bridge`` (nnU-Net as a library: export, plan, train, predict), ``short_trainer`` (short nnU-Net
trainers for CPU demos and tests), ``metrics`` (WT/TC/ET Dice and HD95), ``evaluate`` (scenarios, caching, the
run), ``report`` (tables and figure). Kept free of imports: nnU-Net imports this folder's modules one by one when
it looks for a trainer through ``nnUNet_extTrainer``.
"""
