"""The CodeBrain papers' ablation tables on any dataset: groups (``groups``), training and scoring (``run``),
Stage I oracle reconstruction (``reconstruction``) and the tables and plot (``report``); ``codebrain_ablate``."""
