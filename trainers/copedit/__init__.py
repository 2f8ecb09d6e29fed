"""CoPeDiT as a method of the harness: Stage I (CoPeVAE) and Stage II (MDiT3D on cached latents) on the one loop.

Registered in ``trainers.METHODS`` as ``copedit`` (results folder ``CoPeDiT[-option]__<plans>__<configuration>``);
its options (:data:`COPEDIT_ABLATIONS`) select the prompt source and the model layout of Stage II.
"""
from __future__ import annotations

from trainers.copedit.common import (
    COPEDIT_ABLATIONS,
    LAYOUT_CHOICES,
    PROMPT_CHOICES,
    ablation_switches,
    copedit_ablation,
    copedit_config,
)

__all__ = ["COPEDIT_ABLATIONS", "LAYOUT_CHOICES", "PROMPT_CHOICES", "ablation_switches", "copedit_ablation",
           "copedit_config"]
