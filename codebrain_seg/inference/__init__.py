"""Imputation: the predictors of each method (any subset of sequences in, the missing ones out, on the case's own
grid) and the registry adapters that build them from a results folder. See ``codebrain_seg.run.methods`` for the
one method registry."""
