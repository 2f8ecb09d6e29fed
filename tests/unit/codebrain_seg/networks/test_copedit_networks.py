"""CoPeDiT networks: paper parameter counts, configs, CoPeVAE and its losses, MDiT3D, missing-slot diffusion, EMA."""
from __future__ import annotations

import json
import math

import pytest
import torch
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from torch import nn

from codebrain_seg.networks.copedit import (
    CoPeDiTConfig,
    CoPeVAE,
    CoPeVAEConfig,
    CoPeVAELoss,
    DiffusionConfig,
    ExponentialMovingAverage,
    MDiT3D,
    MDiT3DConfig,
    MDiTBlock,
    MissingSlotDiffusion,
    RotaryEmbedding3D,
    available_first_order,
    build_discriminator,
    check_missing_mask,
    contrastive_assessment_loss,
    mask_code_prompts,
    missing_count_loss,
    missing_position_loss,
    reorder_slots,
    restore_slot_order,
    sample_missing_masks,
    sincos_position_embedding_3d,
)
from codebrain_seg.networks.copedit import mdit3d as mdit3d_module

CPU = CoPeDiTConfig.cpu()


def _parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _within(measured: int, reference: float, tolerance: float = 0.01) -> bool:
    return abs(measured - reference) <= tolerance * reference


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _randomise_zero_layers(model: MDiT3D, scale: float = 0.05) -> MDiT3D:
    # a new MDiT3D outputs zeros (adaLN-Zero + zero final layer); give it non-trivial outputs for sampling tests
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in [block.modulation[-1] for block in model.blocks] + [model.final_layer.linear,
                                                                          model.final_layer.modulation[-1]]:
            layer.weight.copy_(scale * torch.randn(layer.weight.shape, generator=generator))
    return model


# ---- paper configuration ---------------------------------------------------------------------------------


def test_paper_parameter_counts_match_the_reference() -> None:
    config = CoPeDiTConfig.paper()
    # built on the CPU one at a time (0.55 GB and 0.69 GB of weights); no forward pass
    copevae = CoPeVAE(config.vae)
    assert _within(_parameters(copevae), 137.63e6)
    assert _within(_parameters(copevae.autoencoder), 133.63e6)
    assert _within(_parameters(copevae.prompt_encoders[0]), 1.31e6)
    # exact figure of this implementation: VQVAE 133,633,545 + 3 x 1,307,776 prompt encoders + 69,255 heads
    assert _parameters(copevae) == 137_626_128
    del copevae
    mdit = MDiT3D(config.dit)
    assert _within(_parameters(mdit), 173.34e6)
    assert _parameters(mdit) == 173_344_064
    assert not any(buffer.requires_grad for buffer in mdit.buffers())  # fixed embeddings are not parameters
    del mdit
    assert _within(_parameters(build_discriminator(config.vae)), 2.8e6, tolerance=0.02)


def test_paper_geometry() -> None:
    config = CoPeDiTConfig.paper()
    assert config.latent_shape == (24, 24, 8)
    assert config.token_grid == (12, 12, 4) and math.prod(config.token_grid) == 576
    assert config.dit.head_dim == 64 and sum(config.dit.rope_dims) == 64
    assert config.diffusion.num_train_timesteps == 500 and config.diffusion.sampling_steps == 200


@pytest.mark.parametrize("factory", [CoPeDiTConfig.paper, CoPeDiTConfig.cpu])
def test_config_round_trip_through_json(factory) -> None:
    config = factory()
    restored = CoPeDiTConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert MDiT3DConfig.from_dict(config.dit.to_dict()) == config.dit
    assert CoPeVAEConfig.from_dict(config.vae.to_dict()) == config.vae
    assert DiffusionConfig.from_dict(config.diffusion.to_dict()) == config.diffusion


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown CoPeVAEConfig keys"):
        CoPeVAEConfig.from_dict({"widths": 3})
    with pytest.raises(ValueError, match="rope_dims"):
        MDiT3DConfig(width=96, num_heads=3, rope_dims=(12, 12, 12))
    with pytest.raises(ValueError, match="depth must be even"):
        MDiT3DConfig(depth=3)
    with pytest.raises(ValueError, match="divisible by 16"):
        CoPeDiTConfig(volume_shape=(64, 64, 40), vae=CPU.vae, dit=CPU.dit)
    with pytest.raises(ValueError, match="prompts"):
        CoPeDiTConfig(volume_shape=(64, 64, 32), vae=CPU.vae, dit=CoPeDiTConfig.paper().dit)


def test_mask_prompt_ablation_is_a_config_switch() -> None:
    config = CPU.with_mask_prompts()
    assert config.prompt_source == "mask" and (config.dit.num_prompts, config.dit.prompt_dim) == (1, 4)
    assert CoPeDiTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    missing = torch.tensor([[True, False, False, True]])
    codes = mask_code_prompts(missing)
    assert torch.equal(codes, torch.tensor([[[1.0, 0.0, 0.0, 1.0]]]))
    model = _randomise_zero_layers(MDiT3D(config.dit))
    latents = torch.randn(1, 4, 8, *CPU.latent_shape)
    assert model(latents, torch.tensor([5]), codes).shape == latents.shape
    with pytest.raises(ValueError, match="prompt_source"):
        CoPeDiTConfig(volume_shape=(64, 64, 32), vae=CPU.vae, dit=CPU.dit, prompt_source="masks")


# ---- CoPeVAE ---------------------------------------------------------------------------------------------


def test_missing_masks_are_valid_and_reproducible() -> None:
    masks = sample_missing_masks(200, 4, torch.Generator().manual_seed(3))
    counts = masks.sum(dim=1)
    assert masks.shape == (200, 4) and masks.dtype == torch.bool
    assert counts.min() == 1 and counts.max() == 3
    assert set(counts.tolist()) == {1, 2, 3} and masks.any(dim=0).all()
    assert torch.equal(masks, sample_missing_masks(200, 4, torch.Generator().manual_seed(3)))
    shared = sample_missing_masks(16, 4, torch.Generator().manual_seed(4), same_count=True).sum(dim=1)
    assert (shared == shared[0]).all()
    with pytest.raises(ValueError, match="1..3 missing"):
        check_missing_mask(torch.tensor([[True, True, True, True]]), 1, 4)
    with pytest.raises(ValueError, match="1..3 missing"):
        check_missing_mask(torch.zeros(1, 4), 1, 4)


def test_copevae_cpu_forward_backward_shapes() -> None:
    config = CPU.vae
    model, discriminator = CoPeVAE(config), build_discriminator(config)
    criterion = CoPeVAELoss(config)
    volumes = torch.rand(2, 4, *CPU.volume_shape)
    missing = torch.tensor([[True, False, False, False], [False, True, True, False]])
    output = model(volumes, missing)
    assert output.reconstruction.shape == volumes.shape
    assert output.latents.shape == (2, 4, 8, *CPU.latent_shape)
    assert output.prompts.shape == (2, 3, config.prompt_dim)
    assert output.count_logits.shape == (2, 3)
    assert output.position_logits.shape == (2, 4)
    assert output.anchor.shape == output.positive.shape == (2, config.contrastive_dim)
    assert criterion.perceptual is None  # off by default: no local weights configured
    parts = criterion.generator_losses(output, volumes, missing, discriminator)
    assert set(parts) == {"l1", "vq", "count", "position", "contrastive", "adversarial", "total"}
    expected = (parts["l1"] + parts["vq"] + 0.01 * parts["adversarial"]
                + 0.01 * (parts["count"] + 0.5 * parts["position"] + 0.5 * parts["contrastive"]))
    assert torch.allclose(parts["total"], expected)
    parts["total"].backward()
    for module in (model.autoencoder.encoder, model.autoencoder.decoder, *model.prompt_encoders,
                   model.count_head, model.position_head, model.contrastive_head):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters() if p.dim() > 1)
    discriminator.zero_grad()
    criterion.discriminator_loss(discriminator, volumes, output.reconstruction).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in discriminator.parameters() if p.dim() > 1)
    decoded = model.decode(output.latents.detach())
    assert decoded.shape == volumes.shape
    assert 1.0 <= model.codebook_perplexity <= config.num_embeddings


def test_prompts_read_only_the_available_modalities() -> None:
    model = CoPeVAE(CPU.vae).eval()  # eval: BatchNorm uses running statistics, cases are independent
    latents = torch.randn(2, 4, 8, *CPU.latent_shape)
    available = torch.tensor([[True, True, False, False], [False, True, True, True]])
    prompts = model.prompts(latents, available)
    changed = latents.clone()
    changed[~available] = 100.0  # the missing slots' contents must not matter (mask-free inference)
    assert torch.equal(model.prompts(changed, available), prompts)
    alone = model.prompts(latents[1:], available[1:])  # a case's prompt does not depend on the others
    assert torch.allclose(alone, prompts[1:], atol=1e-6)
    # the prompt is the mean over the available modalities of each encoder's token
    tokens = model.prompt_encoders[1](latents[0, :2])
    assert torch.allclose(prompts[0, 1], tokens.mean(dim=0), atol=1e-6)


def test_pretext_losses_values() -> None:
    missing = torch.tensor([[True, False, False, False], [True, True, True, False]])
    count_logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])  # right on both
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert missing_count_loss(count_logits, missing).item() == pytest.approx(expected, rel=1e-6)
    assert missing_count_loss(count_logits, missing, "bce").item() == pytest.approx(
        nn.functional.binary_cross_entropy_with_logits(count_logits, torch.eye(3)[[0, 2]]).item(), rel=1e-6)
    confident = 20.0 * (2 * missing.float() - 1)
    assert missing_position_loss(confident, missing).item() < 1e-8
    assert missing_position_loss(-confident, missing).item() > 19
    with pytest.raises(ValueError):
        missing_count_loss(torch.zeros(2, 4), missing)


def test_contrastive_loss_prefers_matched_pairs() -> None:
    anchors = torch.eye(4, 8)  # orthogonal unit vectors
    matched = contrastive_assessment_loss(anchors, anchors, temperature=0.2)
    # positives on the diagonal score 1 / 0.2 = 5, the three negatives 0
    assert matched.item() == pytest.approx(-math.log(math.exp(5) / (math.exp(5) + 3)), rel=1e-6)
    swapped = contrastive_assessment_loss(anchors, anchors[[1, 2, 3, 0]], temperature=0.2)
    assert swapped.item() > matched.item() + 5
    features = torch.randn(16, 32)
    near = contrastive_assessment_loss(features, features + 0.1 * torch.randn(16, 32))
    unrelated = contrastive_assessment_loss(features, torch.randn(16, 32))
    assert near < unrelated
    assert contrastive_assessment_loss(features[:1], torch.randn(1, 32)).item() == 0.0
    # scale invariance: the logits are cosines
    assert torch.allclose(contrastive_assessment_loss(3 * features, features), contrastive_assessment_loss(features,
                                                                                                           features))


def test_perceptual_loss_needs_local_weights(tmp_path) -> None:
    config = CoPeVAEConfig.from_dict({**CPU.vae.to_dict(), "perceptual_weights": str(tmp_path / "absent.pth")})
    assert CoPeVAELoss(config).perceptual is None


# ---- embeddings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(3, 5, 2), (12, 12, 4), (1, 4, 3)])
def test_position_embedding_non_cubic_grids(grid) -> None:
    table = sincos_position_embedding_3d(grid, 96)
    assert table.shape == (math.prod(grid), 96)
    assert not table.requires_grad
    assert torch.unique(table, dim=0).shape[0] == math.prod(grid)  # every position distinct
    monai_table = build_sincos_position_embedding(list(grid), 96, spatial_dims=3)[0]
    assert torch.equal(table, monai_table.detach())
    # C order: the z coordinate is the fastest; its block of the table (last third) changes first
    if grid[2] > 1:
        assert not torch.equal(table[0, 64:], table[1, 64:]) and torch.equal(table[0, :64], table[1, :64])


def test_rope_shapes_and_relative_positions() -> None:
    rope = RotaryEmbedding3D((12, 12, 8))
    grid = (4, 5, 3)
    angles = rope.angles(grid)
    assert angles.shape == (60, 16)
    query, key = torch.randn(32), torch.randn(32)
    rotated_q = rope.apply(query.expand(2, 60, 32), angles)
    rotated_k = rope.apply(key.expand(60, 32), angles)
    assert rotated_q.shape == (2, 60, 32)
    assert torch.allclose(rotated_q.norm(dim=-1), query.norm().expand(2, 60), rtol=1e-5)
    scores = rotated_q[0] @ rotated_k.T

    def index(x: int, y: int, z: int) -> int:
        return (x * grid[1] + y) * grid[2] + z

    # the score depends only on the 3D offset between the two tokens
    assert torch.allclose(scores[index(0, 0, 0), index(1, 2, 1)], scores[index(2, 2, 1), index(3, 4, 2)], atol=1e-4)
    assert torch.allclose(scores[index(2, 0, 1), index(0, 3, 0)], scores[index(3, 1, 2), index(1, 4, 1)], atol=1e-4)
    assert not torch.allclose(scores[index(0, 0, 0), index(1, 0, 0)], scores[index(0, 0, 0), index(2, 0, 0)])
    # each axis rotates only its own channel pairs: moving along z leaves the x and y pairs untouched
    assert torch.equal(angles[index(1, 2, 0), :12], angles[index(1, 2, 2), :12])
    assert not torch.equal(angles[index(1, 2, 0), 12:], angles[index(1, 2, 2), 12:])
    with pytest.raises(ValueError):
        rope.apply(torch.randn(59, 32), angles)


# ---- MDiT3D ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_rope", [False, True])
def test_adaln_zero_block_is_identity_at_initialisation(with_rope: bool) -> None:
    model = MDiT3D(CPU.dit)
    block = model.blocks[0]
    tokens, condition = torch.randn(2, 4, 32, 96), torch.randn(2, 96)
    angles = model.rope.angles((4, 4, 2)) if with_rope else None
    assert torch.equal(block(tokens, condition, angles), tokens)
    fresh = MDiTBlock(96, 3, 256)
    nn.init.zeros_(fresh.modulation[-1].weight)
    nn.init.zeros_(fresh.modulation[-1].bias)
    assert torch.equal(fresh(tokens, condition), tokens)
    _randomise_zero_layers(model)
    assert not torch.allclose(model.blocks[0](tokens, condition, angles), tokens)


def test_new_mdit3d_predicts_zero_for_every_slot() -> None:
    model = MDiT3D(CPU.dit)
    latents = torch.randn(2, 4, 8, *CPU.latent_shape)
    out = model(latents, torch.tensor([3, 400]), torch.randn(2, 3, 128))
    assert out.shape == latents.shape and torch.equal(out, torch.zeros_like(out))


def test_mdit3d_cpu_forward_backward_and_non_cubic_grid() -> None:
    model = MDiT3D(CPU.dit)
    diffusion = MissingSlotDiffusion(CPU.diffusion)
    latents = torch.randn(2, 4, 8, *CPU.latent_shape)
    missing = torch.tensor([[True, False, False, False], [False, True, True, False]])
    loss = diffusion.training_loss(model, latents, missing, torch.randn(2, 3, 128), torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and loss.item() == pytest.approx(latents.square().mean().item(), rel=1e-5)  # predicts 0
    loss.backward()
    # at initialisation only the final projection gets a gradient (its zero weights cut the rest), as in DiT
    assert model.final_layer.linear.weight.grad.abs().sum() > 0
    assert all(block.modulation[-1].weight.grad.abs().sum() == 0 for block in model.blocks)
    _randomise_zero_layers(model)
    model.zero_grad()
    diffusion.training_loss(model, latents, missing, torch.randn(2, 3, 128)).backward()
    for block in model.blocks:
        assert block.attention.qkv.weight.grad.abs().sum() > 0 and block.mlp.output.weight.grad.abs().sum() > 0
    assert model.patch_embed.weight.grad.abs().sum() > 0 and model.prompt_projection[-1].weight.grad.abs().sum() > 0
    odd = torch.randn(1, 4, 8, 8, 4, 6)  # token grid 4 x 2 x 3
    out = model(odd, torch.tensor([10]), torch.randn(1, 3, 128))
    assert out.shape == odd.shape and out.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible by the patch size"):
        model(torch.randn(1, 4, 8, 8, 4, 5), torch.tensor([10]), torch.randn(1, 3, 128))
    with pytest.raises(ValueError, match="prompts"):
        model(odd, torch.tensor([10]), torch.randn(1, 2, 128))


def test_patchify_and_unpatchify_are_inverse(monkeypatch) -> None:
    # with positions, slot embedding and norms out of the way and blocks at identity, a space-to-depth patchify
    # and the matching final projection must give back the input exactly
    model = MDiT3D(CPU.dit)
    monkeypatch.setattr(mdit3d_module, "sincos_position_embedding_3d", lambda grid, dim: torch.zeros(1, dim))
    model.slot_embedding.zero_()
    model.final_layer.norm = nn.Identity()
    with torch.no_grad():
        model.patch_embed.weight.zero_()
        model.patch_embed.bias.zero_()
        model.final_layer.linear.weight.zero_()
        for channel in range(8):
            for i in range(2):
                for j in range(2):
                    for k in range(2):
                        feature = ((channel * 2 + i) * 2 + j) * 2 + k
                        model.patch_embed.weight[feature, channel, i, j, k] = 1.0
                        model.final_layer.linear.weight[feature, feature] = 1.0
    latents = torch.randn(2, 4, 8, 4, 6, 2)
    assert torch.equal(model(latents, torch.tensor([0, 1]), torch.randn(2, 3, 128)), latents)


def test_prompts_condition_only_the_modal_blocks() -> None:
    model = _randomise_zero_layers(MDiT3D(CPU.dit))
    conditions: dict[int, list[torch.Tensor]] = {index: [] for index in range(len(model.blocks))}
    for index, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda module, args, index=index: conditions[index].append(args[1].clone()))
    latents = torch.randn(1, 4, 8, *CPU.latent_shape)
    outputs = [model(latents, torch.tensor([7]), torch.randn(1, 3, 128)) for _ in range(2)]
    assert not torch.allclose(outputs[0], outputs[1])
    for index, (first, second) in conditions.items():
        if model.is_spatial_block(index):
            assert torch.equal(first, second)
        else:
            assert not torch.allclose(first, second)


# ---- diffusion -------------------------------------------------------------------------------------------


def test_schedule_and_noising_touch_only_missing_slots() -> None:
    diffusion = MissingSlotDiffusion(DiffusionConfig())
    assert diffusion.alphas_cumprod[-1].item() == pytest.approx(0.012, abs=5e-4)
    latents = torch.randn(3, 4, 8, 4, 4, 2)
    noise = torch.randn_like(latents)
    missing = torch.tensor([[True, False, False, False], [False, True, True, False], [True, True, True, False]])
    timesteps = torch.tensor([0, 250, 499])
    noised = diffusion.noise_missing(latents, missing, timesteps, noise)
    assert torch.equal(noised[~missing], latents[~missing])
    alpha = diffusion.alphas_cumprod[timesteps].float().reshape(3, 1, 1, 1, 1, 1)
    expected = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
    assert torch.allclose(noised[missing], expected.expand_as(latents)[missing], atol=1e-6)
    assert not torch.allclose(noised[missing], latents[missing])


def test_ddim_timesteps_cover_the_training_schedule() -> None:
    diffusion = MissingSlotDiffusion(DiffusionConfig())
    steps = diffusion.sampling_timesteps()
    assert len(steps) == 200 and steps[0] == 499 and steps[-1] == 0
    assert (steps[:-1] > steps[1:]).all()
    assert diffusion.sampling_timesteps(500).tolist() == list(range(499, -1, -1))
    with pytest.raises(ValueError):
        diffusion.sampling_timesteps(501)


def test_ddim_sampling_is_deterministic_and_keeps_available_latents() -> None:
    model = _randomise_zero_layers(MDiT3D(CPU.dit)).eval()
    diffusion = MissingSlotDiffusion(DiffusionConfig(sampling_steps=6, latent_scale=0.7))
    latents = torch.randn(2, 4, 8, *CPU.latent_shape)
    missing = torch.tensor([[True, False, False, True], [False, False, True, False]])
    prompts = torch.randn(2, 3, 128)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    first = diffusion.sample(model, latents, missing, prompts, seed=5)
    second = diffusion.sample(model, latents, missing, prompts, seed=5)
    other = diffusion.sample(model, latents, missing, prompts, seed=6)
    assert torch.equal(first, second)
    assert not torch.allclose(first[missing], other[missing])
    assert torch.equal(first[~missing], latents[~missing])
    assert first.shape == latents.shape and torch.isfinite(first).all()
    assert len(seen) == 18
    for inputs in seen:  # the model always sees the clean (scaled) available latents
        assert torch.allclose(inputs[~missing], 0.7 * latents[~missing])
    # the missing slots' input values are ignored
    scrambled = latents.clone()
    scrambled[missing] = 9.0
    assert torch.equal(diffusion.sample(model, scrambled, missing, prompts, seed=5)[missing], first[missing])


def test_available_first_slot_order_round_trips() -> None:
    missing = torch.tensor([[True, False, True, False], [False, False, False, True]])
    order = available_first_order(missing)
    assert order.tolist() == [[1, 3, 0, 2], [0, 1, 2, 3]]
    latents = torch.randn(2, 4, 8, 2, 2, 2)
    reordered = reorder_slots(latents, order)
    assert torch.equal(reordered[0, 0], latents[0, 1]) and torch.equal(reordered[0, 3], latents[0, 2])
    assert torch.equal(restore_slot_order(reordered, order), latents)


def test_ema_averages_parameters_and_copies_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = ExponentialMovingAverage(model, decay=0.5)
    assert not any(parameter.requires_grad for parameter in ema.parameters())
    before = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema.update(model)
    assert torch.allclose(ema.model[0].weight, before + 0.5)
    assert torch.equal(ema.model[1].running_mean, torch.full((2,), 3.0))
    assert set(ema.state_dict()) == {f"model.{key}" for key in model.state_dict()}
    with pytest.raises(ValueError):
        ExponentialMovingAverage(model, decay=1.0)
