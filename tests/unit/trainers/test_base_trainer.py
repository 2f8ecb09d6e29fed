"""trainers/base_trainer.py: device choice and precision (no training)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from trainers.base_trainer import select_device


def test_cuda_without_gpu_is_a_clear_error(monkeypatch) -> None:
    # runs on every machine: PyTorch is told that it sees no GPU (was skipped wherever one was present)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(EnvironmentError, match="no CUDA GPU"):
        select_device("cuda")


@pytest.mark.parametrize("has_bf16", [False, True])
def test_auto_precision_follows_native_bf16_on_the_cpu(monkeypatch, has_bf16):
    """'auto' autocasts to bf16 only on a CPU that computes it natively (AMX / AVX512-BF16), else stays fp32."""
    from trainers.base_trainer import BaseTrainer, native_bf16

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: has_bf16, raising=False)
    cpu = SimpleNamespace(device=torch.device("cpu"), cpu_auto_bf16=True)
    assert native_bf16(cpu.device) is has_bf16
    assert BaseTrainer._choose_precision(cpu, "auto") == ("bf16" if has_bf16 else "fp32")
    # CoPeVAE's trainer opts out (its 3D backward gave NaN gradients in CPU bf16): fp32 unless asked for bf16
    from trainers.copedit.stage1 import CoPeVAETrainer

    vae = SimpleNamespace(device=cpu.device, cpu_auto_bf16=CoPeVAETrainer.cpu_auto_bf16)
    assert BaseTrainer._choose_precision(vae, "auto") == "fp32"
    assert BaseTrainer._choose_precision(vae, "bf16") == "bf16"
    assert BaseTrainer._choose_precision(cpu, "fp32") == "fp32"
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device"):
        BaseTrainer._choose_precision(cpu, "fp16")


def _stepping_trainer(tmp_path):
    """The attributes ``BaseTrainer.optimizer_step`` reads, around one linear layer (no training loop)."""
    layer = torch.nn.Linear(3, 1)
    return SimpleNamespace(optimizers={"net": torch.optim.SGD(layer.parameters(), lr=0.1)}, layer=layer,
                           scaler=torch.amp.GradScaler("cpu", enabled=False), nonfinite_steps={}, skipped_steps=0,
                           iteration=7, precision="bf16", output_dir=tmp_path)


def test_a_non_finite_step_is_skipped_and_a_run_of_them_is_a_clear_divergence_error(tmp_path):
    from codebrain_seg.errors import TrainingDivergedError
    from trainers.base_trainer import MAX_NONFINITE_STEPS, BaseTrainer

    trainer = _stepping_trainer(tmp_path)
    before = [p.detach().clone() for p in trainer.layer.parameters()]
    bad = trainer.layer(torch.tensor([[1.0, float("nan"), 0.0]])).sum()
    assert not torch.isfinite(torch.tensor(BaseTrainer.optimizer_step(trainer, "net", bad)))
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.layer.parameters())), "weights untouched"
    assert (trainer.skipped_steps, trainer.nonfinite_steps["net"]) == (1, 1)

    good = trainer.layer(torch.ones(1, 3)).sum()
    norm = BaseTrainer.optimizer_step(trainer, "net", good, max_norm=0.5)
    assert norm == pytest.approx(2.0)  # d/dw = (1, 1, 1), d/db = 1: norm 2, clipped to 0.5 before the step
    assert trainer.nonfinite_steps["net"] == 0 and trainer.skipped_steps == 1
    assert not any(torch.equal(a, b) for a, b in zip(before, trainer.layer.parameters()))

    for _ in range(MAX_NONFINITE_STEPS - 1):
        BaseTrainer.optimizer_step(trainer, "net", trainer.layer(torch.full((1, 3), float("inf"))).sum() * 0)
    with pytest.raises(TrainingDivergedError, match=r"diverged at iteration 7: .* non-finite gradients in net "
                                                    r"\(bf16\).*--continue --precision fp32"):
        BaseTrainer.optimizer_step(trainer, "net", trainer.layer(torch.full((1, 3), float("nan"))).sum())
