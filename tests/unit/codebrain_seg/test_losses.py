"""CodeBrain losses: hand-computed PSNR / L1 / LSGAN values, ordinal grading and classification."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codebrain_seg.losses import (
    classification_loss,
    code_regression_loss,
    decode_classification,
    decode_grading,
    discriminator_loss,
    generator_adversarial_loss,
    grading_loss,
    l1_loss_per_channel,
    levels_to_ordinal_targets,
    psnr_loss_per_channel,
    reconstruction_loss,
    reconstruction_loss_per_channel,
    vector_quantization_loss,
    weight_available_missing,
)

LEVELS = [8, 8, 8, 5, 5, 5]


# ---- reconstruction ------------------------------------------------------------------------------------


def _tiny_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Batch 2, 2 channels, 1x2 pixels: channel 0 errors (0.1, 0.3, 0, 0), channel 1 errors (0.5, 0.5, 0.5, 0.5)."""
    target = torch.zeros(2, 2, 1, 2)
    prediction = torch.zeros(2, 2, 1, 2)
    prediction[0, 0, 0] = torch.tensor([0.1, 0.3])
    prediction[:, 1] = 0.5
    return prediction, target


def test_psnr_loss_hand_computed() -> None:
    prediction, target = _tiny_pair()
    mse0 = (0.01 + 0.09) / 4
    mse1 = 0.25
    expected = torch.tensor([10 * math.log10(mse0 + 1e-8), 10 * math.log10(mse1 + 1e-8)])
    torch.testing.assert_close(psnr_loss_per_channel(prediction, target), expected)
    assert psnr_loss_per_channel(target, target).tolist() == pytest.approx([-80.0, -80.0], abs=1e-4)


def test_l1_loss_hand_computed() -> None:
    prediction, target = _tiny_pair()
    torch.testing.assert_close(l1_loss_per_channel(prediction, target), torch.tensor([0.1, 0.5]))


def test_weights_five_and_twenty() -> None:
    per_channel = torch.tensor([1.0, 2.0, 4.0, 8.0])
    available = torch.tensor([True, False, True, False])
    # available mean (1 + 4) / 2 = 2.5, missing mean (2 + 8) / 2 = 5
    assert weight_available_missing(per_channel, available).item() == pytest.approx(5 * 2.5 + 20 * 5.0)
    assert weight_available_missing(per_channel, [1, 1, 1, 0]).item() == pytest.approx(5 * 7 / 3 + 20 * 8)
    # nothing missing: only the available term remains
    assert weight_available_missing(per_channel, [1, 1, 1, 1]).item() == pytest.approx(5 * 15 / 4)


def test_reconstruction_loss_combines_per_channel_terms() -> None:
    prediction, target = _tiny_pair()
    available = torch.tensor([False, True])
    per_channel = psnr_loss_per_channel(prediction, target)
    expected = 5 * per_channel[1] + 20 * per_channel[0]
    torch.testing.assert_close(reconstruction_loss(prediction, target, available), expected)
    l1 = reconstruction_loss(prediction, target, available, kind="l1", weight_available=1.0, weight_missing=2.0)
    assert l1.item() == pytest.approx(1 * 0.5 + 2 * 0.1)
    with pytest.raises(ValueError, match="kind"):
        reconstruction_loss(prediction, target, available, kind="ssim")
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        reconstruction_loss(prediction, target, torch.tensor([True, False, True]))


def test_psnr_loss_gradient_flows_only_where_there_is_error() -> None:
    prediction, target = _tiny_pair()
    prediction.requires_grad_(True)
    reconstruction_loss(prediction, target, [True, False]).backward()
    assert prediction.grad[1, 0].abs().sum() == 0  # zero error there
    assert prediction.grad[0, 0].abs().sum() > 0


# ---- LSGAN ---------------------------------------------------------------------------------------------


def test_discriminator_loss_per_channel_fake_targets() -> None:
    real = torch.tensor([[[[1.0]], [[0.5]]]])  # (1, 2, 1, 1)
    fake = torch.tensor([[[[0.8]], [[0.4]]]])
    available = torch.tensor([True, False])  # fake targets: channel 0 -> 1, channel 1 -> 0
    real_term = ((1.0 - 1.0) ** 2 + (0.5 - 1.0) ** 2) / 2
    fake_term = ((0.8 - 1.0) ** 2 + (0.4 - 0.0) ** 2) / 2
    assert discriminator_loss(real, fake, available).item() == pytest.approx(0.5 * (real_term + fake_term))
    # all channels missing would be the plain LSGAN loss
    plain = 0.5 * (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)))
    assert discriminator_loss(real, fake, [0, 0]).item() == pytest.approx(plain.item())


def test_generator_adversarial_loss() -> None:
    fake = torch.tensor([[[[0.8]], [[0.4]]]])
    assert generator_adversarial_loss(fake).item() == pytest.approx(((0.2) ** 2 + (0.6) ** 2) / 2)


# ---- grading (ordinal) ---------------------------------------------------------------------------------


def test_ordinal_targets_single_channel() -> None:
    levels = torch.arange(5).view(5, 1, 1, 1)
    targets = levels_to_ordinal_targets(levels, 5)
    assert targets.shape == (5, 4, 1, 1)
    assert targets[:, :, 0, 0].tolist() == [
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [1, 1, 1, 1],
    ]


def _all_level_combinations() -> torch.Tensor:
    """Every level of every channel at least once: (8, 6, 1, 1), channel i takes min(j, L_i - 1)."""
    j = torch.arange(8).view(8, 1)
    return torch.minimum(j, torch.tensor(LEVELS).view(1, 6) - 1).view(8, 6, 1, 1)


def test_grading_encode_decode_round_trip_for_every_level() -> None:
    levels = _all_level_combinations()
    targets = levels_to_ordinal_targets(levels, LEVELS)
    assert targets.shape == (8, 33, 1, 1)
    ideal_logits = targets * 20 - 10  # +10 where the target is 1, -10 where it is 0
    assert torch.equal(decode_grading(ideal_logits, LEVELS), levels)
    # layout: channel groups [7, 7, 7, 4, 4, 4] in order; level 3 of channel 3 sets outputs 21, 22, 23
    one = torch.zeros(1, 6, 1, 1, dtype=torch.long)
    one[0, 3] = 3
    assert levels_to_ordinal_targets(one, LEVELS).flatten().nonzero().flatten().tolist() == [21, 22, 23]


def test_grading_loss_matches_per_channel_bce() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 33, 3, 3)
    levels = torch.stack([torch.randint(0, level, (2, 3, 3)) for level in LEVELS], dim=1)
    targets = levels_to_ordinal_targets(levels, LEVELS)
    per_channel = [
        F.binary_cross_entropy_with_logits(chunk, target)
        for chunk, target in zip(logits.split([7, 7, 7, 4, 4, 4], 1), targets.split([7, 7, 7, 4, 4, 4], 1))
    ]
    torch.testing.assert_close(grading_loss(logits, levels, LEVELS), torch.stack(per_channel).mean())


def test_grading_loss_penalises_near_misses_less() -> None:
    true_level = torch.full((1, 1, 2, 2), 2)
    losses = []
    for predicted in range(8):
        logits = levels_to_ordinal_targets(torch.full((1, 1, 2, 2), predicted), 8) * 8 - 4
        losses.append(grading_loss(logits, true_level, [8]).item())
    assert losses[2] < losses[3] < losses[6]  # exact < one off < four off
    assert losses[1] < losses[6] and losses[3] == pytest.approx(losses[1])
    # the classification loss cannot tell near from far misses
    class_losses = []
    for predicted in (3, 6):
        logits = F.one_hot(torch.full((1, 2, 2), predicted), 8).permute(0, 3, 1, 2).float() * 8
        class_losses.append(classification_loss(logits, true_level, [8]).item())
    assert class_losses[0] == pytest.approx(class_losses[1])


def test_decode_grading_counts_positive_logits_without_monotonicity() -> None:
    logits = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(1, 4, 1, 1)  # non-monotone: count, not first-zero
    assert decode_grading(logits, [5]).item() == 2


def test_expected_decodes_are_the_mean_level_and_agree_with_the_count_when_sure() -> None:
    # P(level > t) = 0.9, 0.5, 0.2, 0.1 for L = 5: expected level 1.7; the count says 1 (one logit above 0).
    probabilities = torch.tensor([0.9, 0.5, 0.2, 0.1])
    logits = torch.logit(probabilities).view(1, 4, 1, 1)
    expected = decode_grading(logits, [5], expected=True)
    assert expected.dtype == torch.float32 and expected.shape == (1, 1, 1, 1)
    assert expected.item() == pytest.approx(1.7, abs=1e-5)
    assert decode_grading(logits, [5]).item() == 1
    levels = _all_level_combinations()
    sure = levels_to_ordinal_targets(levels, LEVELS) * 40 - 20
    torch.testing.assert_close(decode_grading(sure, LEVELS, expected=True), levels.float())
    # classes: softmax-weighted level; 0.5 / 0.5 on levels 1 and 3 of L = 4 -> 2.0, argmax says 1
    class_logits = torch.tensor([-30.0, 0.0, -30.0, 0.0]).view(1, 4, 1, 1)
    assert decode_classification(class_logits, [4], expected=True).item() == pytest.approx(2.0, abs=1e-5)
    assert decode_classification(class_logits, [4]).item() == 1


def test_grading_shape_errors() -> None:
    with pytest.raises(ValueError, match="33 channels"):
        grading_loss(torch.zeros(1, 32, 2, 2), torch.zeros(1, 6, 2, 2, dtype=torch.long), LEVELS)
    with pytest.raises(ValueError, match="6 level counts"):
        levels_to_ordinal_targets(torch.zeros(1, 6, 2, 2, dtype=torch.long), [8, 8])


# ---- classification ablation ---------------------------------------------------------------------------


def test_classification_loss_and_decode() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 39, 3, 3)
    levels = torch.stack([torch.randint(0, level, (2, 3, 3)) for level in LEVELS], dim=1)
    chunks = logits.split(LEVELS, dim=1)
    expected = torch.stack([F.cross_entropy(chunk, levels[:, i]) for i, chunk in enumerate(chunks)]).mean()
    torch.testing.assert_close(classification_loss(logits, levels, LEVELS), expected)
    expected_levels = torch.stack([chunk.argmax(dim=1) for chunk in chunks], dim=1)
    assert torch.equal(decode_classification(logits, LEVELS), expected_levels)
    one_hot = torch.cat([F.one_hot(levels[:, i], n).permute(0, 3, 1, 2) for i, n in enumerate(LEVELS)], 1)
    assert torch.equal(decode_classification(one_hot.float(), LEVELS), levels)


def test_classification_gradient_is_finite_with_padding() -> None:
    logits = torch.zeros(1, 39, 1, 1, requires_grad=True)
    levels = torch.tensor([7, 0, 3, 4, 0, 2]).view(1, 6, 1, 1)
    classification_loss(logits, levels, LEVELS).backward()
    assert torch.isfinite(logits.grad).all()
    # within a channel the softmax gradient sums to zero
    assert all(abs(chunk.sum().item()) < 1e-6 for chunk in logits.grad.split(LEVELS, dim=1))


# ---- ablations: loss weights, VQ, continuous codes ------------------------------------------------------


def test_equal_weights_ablation_changes_the_loss_as_the_weights_say() -> None:
    prediction, target = _tiny_pair()
    available = torch.tensor([True, False])
    per_channel = reconstruction_loss_per_channel(prediction, target, "psnr")
    torch.testing.assert_close(per_channel, psnr_loss_per_channel(prediction, target))
    paper = reconstruction_loss(prediction, target, available, "psnr", weight_available=5.0, weight_missing=20.0)
    equal = reconstruction_loss(prediction, target, available, "psnr", weight_available=1.0, weight_missing=1.0)
    torch.testing.assert_close(equal, per_channel.sum())
    torch.testing.assert_close(paper, 5 * per_channel[0] + 20 * per_channel[1])
    # L1 per channel is (0.1, 0.5): weight 1 on the available channel 0, 30 on the missing channel 1
    heavy = reconstruction_loss(prediction, target, [True, False], "l1", weight_available=1.0, weight_missing=30.0)
    assert heavy.item() == pytest.approx(0.1 + 30 * 0.5)
    with pytest.raises(ValueError, match="kind"):
        reconstruction_loss_per_channel(prediction, target, "ssim")


def test_vector_quantization_loss_terms() -> None:
    encoded = torch.tensor([[[[0.5]], [[0.0]]]], requires_grad=True)  # (1, 2, 1, 1)
    entry = torch.tensor([[[[0.1]], [[0.2]]]], requires_grad=True)
    loss = vector_quantization_loss(encoded, entry, commitment_weight=0.25)
    squared = ((0.5 - 0.1) ** 2 + 0.2**2) / 2
    assert float(loss.detach()) == pytest.approx(1.25 * squared)
    loss.backward()
    # codebook term moves the entry towards sg[z]; commitment (x 0.25) moves z towards sg[q]
    torch.testing.assert_close(entry.grad.flatten(), torch.tensor([-0.4, 0.2]))
    torch.testing.assert_close(encoded.grad.flatten(), 0.25 * torch.tensor([0.4, -0.2]))


def test_code_regression_loss_is_the_mean_absolute_code_error() -> None:
    prediction = torch.tensor([[[[0.5]], [[-0.5]]]], requires_grad=True)
    target = torch.tensor([[[[0.0]], [[0.5]]]])
    loss = code_regression_loss(prediction, target)
    assert float(loss.detach()) == pytest.approx((0.5 + 1.0) / 2)
    loss.backward()
    torch.testing.assert_close(prediction.grad.flatten(), torch.tensor([0.5, -0.5]))
    with pytest.raises(ValueError, match="same"):
        code_regression_loss(prediction, target[:, :1])
