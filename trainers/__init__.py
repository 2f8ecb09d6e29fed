"""Training: one loop (``trainers.base_trainer``: device, precision, DDP, checkpoint/resume, logs, validation) and
the stage trainers of each method built on it. Which method trains which stages is the method registry's
(``codebrain_seg.run.methods``); ``codebrain_seg.run.training.run_training`` is the API of ``codebrain_train``."""
