"""Evaluation of imputed sequences: metrics (MONAI), the paper's aggregation, the harness and its figures."""
