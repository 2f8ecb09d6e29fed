"""CoPeDiT speed and compute: seconds per training step of both stages (CPU configuration) and FLOPs per case of the
paper configuration. Prints one ``figure: value`` line per measurement.

* **s/step**: the operations of one iteration of each trainer (``trainers.copedit``) on random data at the
  ``3d_copedit_cpu`` sizes: Stage I = CoPeVAE forward with pretext heads, generator loss (L1, VQ, LSGAN, pretext),
  backward, clipped Adam step, then the discriminator's step (batch 2 cases of 4 x 64 x 64 x 32; without the CPU
  configuration's extra pretext patterns and codebook restarts, which the trainer adds); Stage II = the
  x0 loss on cached latents, backward, clipped AdamW step and the EMA update (batch 8). Median of ``--steps`` after
  ``--warmup`` steps, ``--threads`` torch threads, bf16 autocast where the CPU computes bf16 natively (as the
  trainers' ``--precision auto``), else fp32.
* **FLOPs** (``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-add of convolutions,
  matrix products and attention) of the paper configuration (CoPeVAE-B, MDiT3D-B, 192 x 192 x 64, 4 sequences)
  on **meta tensors**: shapes only, no memory and no arithmetic, so the full size is counted exactly on any
  machine. Per volume: encoder, decoder; per case: a Stage-I training sample (forward + backward of CoPeVAE on the
  4 volumes, with the discriminator), a Stage-II training sample (forward + backward of MDiT3D), and inference
  (encode the 3 given volumes, 200 DDIM steps of MDiT3D, decode the missing one). Element-wise operations
  (normalisation, activations) are not counted.

Usage: ``python benchmarks/bench_copedit.py [--steps 10] [--warmup 2] [--threads 1] [--skip-flops]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from codebrain_seg.networks.copedit import (
    CoPeDiTConfig,
    CoPeVAE,
    CoPeVAELoss,
    ExponentialMovingAverage,
    MDiT3D,
    MissingSlotDiffusion,
    build_discriminator,
    sample_missing_masks,
)
from trainers.base_trainer import native_bf16


def _median_seconds(step, steps: int, warmup: int) -> float:
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        step(index)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)


def stage1_seconds(config: CoPeDiTConfig, batch: int, steps: int, warmup: int, bf16: bool = False) -> float:
    """Median seconds of one CoPeVAE + discriminator training step."""
    vae, discriminator = CoPeVAE(config.vae).train(), build_discriminator(config.vae).train()
    loss = CoPeVAELoss(config.vae)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-4)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-4)
    m = config.vae.num_modalities
    volumes = torch.rand(batch, m, *config.volume_shape)
    generator = torch.Generator().manual_seed(0)

    def step(index: int) -> None:
        missing = sample_missing_masks(batch, m, generator=generator)
        discriminator.requires_grad_(False)
        with _autocast(bf16):
            output = vae(volumes, missing)
            total = loss.generator_losses(output, volumes, missing, discriminator)["total"]
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        discriminator.requires_grad_(True)
        with _autocast(bf16):
            d_loss = loss.discriminator_loss(discriminator, volumes, output.reconstruction.float())
        d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optimizer.step()

    return _median_seconds(step, steps, warmup)


def stage2_seconds(config: CoPeDiTConfig, batch: int, steps: int, warmup: int, bf16: bool = False) -> float:
    """Median seconds of one MDiT3D training step on cached latents (loss, backward, step, EMA)."""
    model = MDiT3D(config.dit).train()
    ema = ExponentialMovingAverage(model, config.diffusion.ema_decay)
    diffusion = MissingSlotDiffusion(config.diffusion)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    m = config.dit.num_modalities
    latents = torch.randn(batch, m, config.vae.embedding_dim, *config.latent_shape)
    prompts = torch.randn(batch, config.dit.num_prompts, config.dit.prompt_dim)
    generator = torch.Generator().manual_seed(0)

    def step(index: int) -> None:
        missing = sample_missing_masks(batch, m, generator=generator)
        with _autocast(bf16):
            loss = diffusion.training_loss(model, latents, missing, prompts, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        ema.update(model)

    return _median_seconds(step, steps, warmup)


def _flops(function) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        function()
    return int(counter.get_total_flops())


def paper_flops() -> dict[str, float]:
    """FLOPs of the paper configuration counted on meta tensors (module docstring)."""
    config = CoPeDiTConfig.paper(4)
    m, shape = 4, config.volume_shape
    with torch.device("meta"):
        vae = CoPeVAE(config.vae)
        discriminator = build_discriminator(config.vae)
        dit = MDiT3D(config.dit)
        volume = torch.empty(1, 1, *shape)
        latent = torch.empty(1, m, config.vae.embedding_dim, *config.latent_shape)
        prompts = torch.empty(1, config.dit.num_prompts, config.dit.prompt_dim)
        timesteps = torch.zeros(1, dtype=torch.long)
    encoder = _flops(lambda: vae.autoencoder.encode(volume))
    decoder = _flops(lambda: vae.autoencoder.decode(torch.empty(1, config.vae.embedding_dim, *config.latent_shape,
                                                                device="meta")))
    # CoPeVAE.forward validates the missing mask and selects the given sequences by boolean indexing, which needs
    # values; on meta tensors the same operations are run with the selection written out (3 given, 1 missing).
    volumes = torch.empty(m, 1, *shape, device="meta")

    def stage1_sample() -> None:
        latents = vae.autoencoder.encode(volumes)
        quantized, vq_loss = vae.autoencoder.quantize(latents)
        reconstruction = vae.autoencoder.decode(quantized)
        given, missing = latents[:3], latents[3:]
        prompts = [encoder(given).mean(dim=0, keepdim=True) for encoder in vae.prompt_encoders]
        positive = vae.prompt_encoders[2](missing).mean(dim=0, keepdim=True)
        heads = (vae.count_head(prompts[0]).sum() + vae.position_head(prompts[1]).sum()
                 + vae.contrastive_head(prompts[2]).sum() + vae.contrastive_head(positive).sum())
        fake = discriminator(reconstruction)[-1]
        (reconstruction.abs().mean() + vq_loss + heads + fake.pow(2).mean()).backward()
        (discriminator(reconstruction.detach())[-1].pow(2).mean()
         + discriminator(volumes)[-1].pow(2).mean()).backward()

    dit_forward = _flops(lambda: dit(latent, timesteps, prompts))

    def stage2_sample() -> None:
        dit(latent, timesteps, prompts).sum().backward()

    steps = config.diffusion.sampling_steps
    return {
        "paper CoPeVAE-B encoder FLOPs per 192x192x64 volume": encoder,
        "paper CoPeVAE-B decoder FLOPs per 192x192x64 volume": decoder,
        "paper Stage I FLOPs per training case (4 volumes, forward + backward, discriminator)": _flops(stage1_sample),
        "paper MDiT3D-B FLOPs per forward (one case)": dit_forward,
        "paper Stage II FLOPs per training case (forward + backward, cached latents)": _flops(stage2_sample),
        f"paper inference FLOPs per case (encode 3, {steps} DDIM steps, decode 1)":
            3 * encoder + steps * dit_forward + decoder,
    }


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-flops", action="store_true")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto = bf16 autocast where the CPU computes bf16 natively, as the trainers do")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16(torch.device("cpu")))
    cpu = CoPeDiTConfig.cpu(4)
    print(f"threads: {args.threads}")
    print(f"precision: {'bf16 autocast' if bf16 else 'fp32'}")
    print(f"cpu Stage I (CoPeVAE, batch 2, 64x64x32) s/step: "
          f"{stage1_seconds(cpu, 2, args.steps, args.warmup, bf16):.3f}")
    print(f"cpu Stage II (MDiT3D, batch 8, cached latents) s/step: "
          f"{stage2_seconds(cpu, 8, args.steps, args.warmup, bf16):.3f}")
    if not args.skip_flops:
        for name, value in paper_flops().items():
            print(f"{name}: {value / 1e12:.2f} TFLOP" if value >= 1e12 else f"{name}: {value / 1e9:.1f} GFLOP")


if __name__ == "__main__":
    main()
