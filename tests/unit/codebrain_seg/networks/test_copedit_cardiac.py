"""CoPeVAE-C and MDiT3D-C as configurations of the shared CoPeDiT networks (paper Tables 14-15; issue 19).

Asserts: the paper sizes (MDiT3D-C 33.0 M parameters within 1 %, counted on the meta device; CoPeVAE-C channels
(32, 64, 128), 8192 codes of 8, compression 8, MDiT3D-C input 4 x 8 x 24 x 24); the brain defaults unchanged
(MDiT3D-B 173,344,064 parameters, old config dicts load); missing runs are consecutive with every length 1..m-1;
slab <-> stack reshapes are inverse; on the CPU preset: CoPeVAE encodes slabs independently (a missing slab's
content does not change the given slabs' latents), the prompts reach only the Spatial ("volume") blocks, and the
Spatial blocks carry information across slabs while the Planar ("slot") blocks do not.
"""
from __future__ import annotations

import pytest
import torch

from codebrain_seg.errors import InputError
from codebrain_seg.networks.copedit import (
    CoPeDiTConfig,
    CoPeVAE,
    MDiT3D,
    MDiT3DConfig,
    MissingSlotDiffusion,
    cpu_cardiac_config,
    paper_cardiac_config,
    sample_missing_runs,
    slabs_to_stack,
    stack_to_slabs,
)
from codebrain_seg.networks.copedit.cardiac import slab_mask_of_slices


def _count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_paper_sizes_of_tables_14_and_15():
    config = paper_cardiac_config()
    assert config.elements == "slices" and config.stack_shape == (192, 192, 32)
    vae = config.vae
    assert vae.channels == (32, 64, 128) and vae.num_embeddings == 8192 and vae.embedding_dim == 8
    assert vae.compression == 8 and vae.num_modalities == 4
    assert (config.dit.num_modalities, config.dit.latent_channels, *config.latent_shape[:2]) == (4, 8, 24, 24)
    assert config.latent_shape[2] == 1 and config.dit.patch_size == 1
    assert (config.dit.width, config.dit.depth, config.dit.num_heads) == (576, 12, 12)
    assert config.dit.block_kinds == ("slot", "volume") and config.dit.prompt_kind == "volume"
    assert config.diffusion.sampling_steps == 250 and config.diffusion.num_train_timesteps == 500
    with torch.device("meta"):
        dit = MDiT3D(config.dit)
        copevae = CoPeVAE(config.vae)
    assert abs(_count(dit) / 33.0e6 - 1) < 0.01, _count(dit)
    assert 10e6 < _count(copevae) < 15e6  # 12.40 M with the three 512-wide prompt encoders
    assert CoPeDiTConfig.from_dict(config.to_dict()) == config


def test_brain_defaults_unchanged():
    with torch.device("meta"):
        assert _count(MDiT3D(MDiT3DConfig())) == 173_344_064
    old = CoPeDiTConfig.cpu(4).to_dict()
    for key in ("block_kinds", "prompt_kind", "modulation"):
        old["dit"].pop(key)
    old.pop("elements")
    loaded = CoPeDiTConfig.from_dict(old)  # plans and checkpoints written before the switch
    assert loaded == CoPeDiTConfig.cpu(4) and loaded.elements == "modalities"
    assert loaded.dit.block_kinds == ("slot", "modal") and loaded.dit.modulation == "per_block"
    with pytest.raises(InputError, match="prompt_kind"):
        MDiT3DConfig(block_kinds=("slot", "volume"), prompt_kind="modal")
    with pytest.raises(InputError, match="block_kinds"):
        MDiT3DConfig(block_kinds=("slot", "slot"))


def test_missing_runs_are_consecutive():
    generator = torch.Generator().manual_seed(0)
    masks = sample_missing_runs(2000, 4, generator)
    lengths = masks.sum(1)
    assert set(lengths.tolist()) == {1, 2, 3}
    for row in masks:
        where = row.nonzero().flatten()
        assert (where.diff() == 1).all()
    starts = masks.float().argmax(1)
    assert set(starts[lengths == 1].tolist()) == {0, 1, 2, 3} and set(starts[lengths == 3].tolist()) == {0, 1}
    slices = torch.zeros(1, 16, dtype=torch.bool)
    slices[0, 5] = True
    assert slab_mask_of_slices(slices, 4).tolist() == [[False, True, False, False]]


def test_slabs_round_trip():
    stack = torch.arange(2 * 3 * 2 * 16, dtype=torch.float32).reshape(2, 3, 2, 16)
    slabs = stack_to_slabs(stack, 4)
    assert slabs.shape == (2, 4, 3, 2, 4) and torch.equal(slabs[:, 1], stack[..., 4:8])
    assert torch.equal(slabs_to_stack(slabs), stack)


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    # zero-initialised adaLN / final layers make a new model blind to its conditioning: give every weight a value
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.05)
    return model.eval()


def test_cpu_preset_slabs_prompts_and_blocks():
    torch.manual_seed(0)
    config = cpu_cardiac_config()
    assert config.stack_shape == (64, 64, 16)
    vae = CoPeVAE(config.vae).eval()
    stack = torch.rand(2, *config.stack_shape)
    slabs = stack_to_slabs(stack, config.vae.num_modalities)
    missing = torch.tensor([[False, True, True, False], [True, False, False, False]])
    with torch.no_grad():
        output = vae(slabs, missing)
        latents = vae.encode(slabs)
        blanked = vae.encode(torch.where(missing[:, :, None, None, None], 0.0, slabs))
    assert output.reconstruction.shape == slabs.shape and output.prompts.shape == (2, 3, 128)
    assert latents.shape == (2, 4, 8, 16, 16, 1)
    # slab-wise encoding: zero-filling the missing slabs leaves the given slabs' latents exactly as they were
    assert torch.equal(latents[~missing], blanked[~missing])

    dit = _randomised(MDiT3D(config.dit))
    captured: dict[int, torch.Tensor] = {}
    hooks = [block.register_forward_hook(lambda _m, _i, out, index=index: captured.__setitem__(index, out))
             for index, block in enumerate(dit.blocks)]
    timesteps = torch.tensor([10, 400])
    prompts = output.prompts
    with torch.no_grad():
        prediction = dit(latents, timesteps, prompts)
        first = {index: value.clone() for index, value in captured.items()}
        dit(latents, timesteps, prompts + 1.0)
    for hook in hooks:
        hook.remove()
    assert prediction.shape == latents.shape
    assert dit.block_kind(0) == "slot" and dit.block_kind(1) == "volume"
    # block 0 (Planar) sees the timestep only; block 1 (Spatial) is where the prompts come in
    assert torch.equal(first[0], captured[0]) and not torch.allclose(first[1], captured[1])

    # through-plane context: changing slab 0 changes slab 3's output after a Spatial block, never after a Planar one
    changed = latents.clone()
    changed[:, 0] += 1.0
    hooks = [block.register_forward_hook(lambda _m, _i, out, index=index: captured.__setitem__(index, out))
             for index, block in enumerate(dit.blocks[:2])]
    with torch.no_grad():
        dit(latents, timesteps, prompts)
        before = {index: value.clone() for index, value in captured.items()}
        dit(changed, timesteps, prompts)
    for hook in hooks:
        hook.remove()
    assert torch.equal(before[0][:, 3], captured[0][:, 3])  # (B, m, N, D) after the Planar block
    spatial_before, spatial_after = (out.reshape(2, 4, -1, out.shape[-1]) for out in (before[1], captured[1]))
    assert not torch.allclose(spatial_before[:, 3], spatial_after[:, 3])  # after the Spatial block (B, 1, m N, D)
    angles = dit.rope.stacked_angles((2, 2, 1), 3)
    third = torch.tensor([[0.0, 0, 2], [0, 1, 2], [1, 0, 2], [1, 1, 2]])  # slab 2 of a 2 x 2 x 1 grid sits at z = 2
    assert torch.equal(angles[8:12], dit.rope.angles_at(third))

    # x0 prediction with only the missing slabs noised: the given slabs go into MDiT3D clean
    diffusion = MissingSlotDiffusion(config.diffusion)
    noised = diffusion.noise_missing(latents, missing, timesteps, torch.randn_like(latents))
    assert torch.equal(noised[~missing], latents[~missing]) and not torch.allclose(noised[missing], latents[missing])
    loss = diffusion.training_loss(dit.train(), latents, missing, prompts, torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss)
