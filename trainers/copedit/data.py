"""CoPeDiT training data: augmented 3D volume batches (Stage I) and cached latents with prompt tokens (Stage II).

Both streams are pure functions of ``(seed, rank, iteration)``, like the 2D slice stream, so a resumed run draws
exactly the batches an uninterrupted one draws. Cases are dealt like ``DistributedSampler``: one permutation of
the training cases per epoch (the same on every rank), consecutive batches to consecutive ranks.

Augmentation (reference: the official code's train transforms, the same draws for every sequence of a case): flip
of each axis (p .3), a quarter turn in the axial plane when it is square (p .3), intensity x U(.9, 1.1) (p .2) and
+ U(-.05, .05) inside the brain (p .2), clipped to [0, 1]. For the slabs of a short-axis stack (plans
``flip_reverses_slabs``) a flip of the slice axis flips the whole stack: the slab order is reversed with the slices
within each slab. Stage II latents are computed once from the
un-augmented volumes (reference decision 8).

**Latent cache** (``<stage2 folder>/latent_cache/``): ``latents.npy`` float32 ``(N, m, e, x, y, z)`` (continuous
pre-quantisation latents of the frozen CoPeVAE, in CoPeVAE units), ``prompt_tokens.npy`` float32
``(N, 3, m, prompt_dim)`` (F_k of every sequence's latent: the prompt of any available set is the mean of its
rows, because the prompt encoders' BatchNorm is frozen) and ``cache.json`` (cases, the Stage-I checkpoint and
iteration it was made from). A cache of another Stage-I checkpoint is rebuilt.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import read_json, write_json, write_npy
from trainers.data_loading import iteration_rng

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1


def load_volumes(folder: Path, case_ids: Sequence[str]) -> list[np.ndarray]:
    """Memory maps of the preprocessed ``CASE.npy`` volumes ``(C, X, Y, Z)``."""
    volumes = []
    for case_id in case_ids:
        path = Path(folder) / f"{case_id}.npy"
        if not path.is_file():
            raise MissingFileError(f"{path} is missing: run codebrain_plan_and_preprocess -c <the CoPeDiT "
                                    "configuration> for this dataset")
        volumes.append(np.load(path, mmap_mode="r"))
    if not volumes:
        raise InputError(f"no cases to train on in {folder}")
    return volumes


def case_indices(num_cases: int, batch_size: int, seed: int, rank: int, world_size: int, iteration: int) -> list[int]:
    """Indices of the cases this rank trains on at ``iteration`` (epoch permutations, ranks interleaved)."""
    first = (iteration * world_size + rank) * batch_size
    indices, permutations = [], {}
    for position in range(first, first + batch_size):
        epoch, offset = divmod(position, num_cases)
        if epoch not in permutations:
            permutations[epoch] = np.random.default_rng([int(seed), epoch]).permutation(num_cases)
        indices.append(int(permutations[epoch][offset]))
    return indices


def augment_case(volume: np.ndarray, rng: np.random.Generator, spec: dict[str, Any]) -> np.ndarray:
    """One case ``(C, X, Y, Z)`` augmented as in the module docstring (same draws for every sequence)."""
    out = np.array(volume, dtype=np.float32, copy=True)
    for axis in (1, 2, 3):
        if rng.uniform() < spec["flip_probability"]:
            out = np.flip(out, axis=(0, 3) if axis == 3 and spec.get("flip_reverses_slabs") else axis)
    if out.shape[1] == out.shape[2] and rng.uniform() < spec["rotate90_probability"]:
        out = np.rot90(out, k=int(rng.integers(1, 4)), axes=(1, 2))
    brain = (out > 0).any(axis=0, keepdims=True)
    if rng.uniform() < spec["scale_probability"]:
        out = out * rng.uniform(*spec["scale_range"])
    if rng.uniform() < spec["shift_probability"]:
        out = np.where(brain, out + rng.uniform(*spec["shift_range"]), 0.0)
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def volume_batches(folder: Path, case_ids: Sequence[str], batch_size: int, seed: int, rank: int, world_size: int,
                   start_iteration: int, augmentation: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """Infinite batches ``{'data': (B, C, X, Y, Z) float32, 'keys', 'iteration'}`` from ``start_iteration`` on."""
    volumes = load_volumes(folder, case_ids)
    iteration = int(start_iteration)
    while True:
        indices = case_indices(len(volumes), batch_size, seed, rank, world_size, iteration)
        rng = iteration_rng(seed, rank, iteration)
        cases = [augment_case(volumes[i], rng, augmentation) if augmentation else np.asarray(volumes[i], np.float32)
                 for i in indices]
        yield {"data": np.stack(cases), "keys": [case_ids[i] for i in indices], "iteration": iteration}
        iteration += 1


def latent_batches(latents: np.ndarray, tokens: np.ndarray, case_ids: Sequence[str], batch_size: int, seed: int,
                   rank: int, world_size: int, start_iteration: int) -> Iterator[dict[str, Any]]:
    """Infinite batches ``{'data': latents (B, m, e, x, y, z), 'tokens': (B, 3, m, Dp), 'keys', 'iteration'}``."""
    iteration = int(start_iteration)
    while True:
        indices = case_indices(len(latents), batch_size, seed, rank, world_size, iteration)
        yield {"data": np.ascontiguousarray(latents[indices]), "tokens": np.ascontiguousarray(tokens[indices]),
               "keys": [case_ids[i] for i in indices], "iteration": iteration}
        iteration += 1


@torch.no_grad()
def encode_case(vae: torch.nn.Module, volume: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Continuous latents ``(m, e, x, y, z)`` and per-sequence prompt tokens ``(3, m, Dp)`` of one complete case."""
    x = torch.from_numpy(np.asarray(volume, dtype=np.float32))[None].to(device)
    latents = vae.encode(x)[0]  # (m, e, x, y, z)
    tokens = torch.stack([encoder(latents) for encoder in vae.prompt_encoders])  # (3, m, Dp)
    return latents.float().cpu().numpy(), tokens.float().cpu().numpy()


def build_latent_cache(cache_dir: Path, vae: torch.nn.Module, data_folder: Path, case_ids: Sequence[str],
                       device: torch.device, stage1: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Latents and prompt tokens of ``case_ids`` (module docstring), computed once and reused while ``stage1``
    (the Stage-I checkpoint's path and iteration) and the cases are unchanged."""
    meta_path = cache_dir / "cache.json"
    expected = {"format": CACHE_FORMAT, "cases": list(case_ids), "stage1": stage1}
    if meta_path.is_file() and read_json(meta_path) == expected:
        return np.load(cache_dir / "latents.npy"), np.load(cache_dir / "prompt_tokens.npy")
    logger.info("caching the CoPeVAE latents of %d case(s) in %s", len(case_ids), cache_dir)
    vae.eval()
    pairs = [encode_case(vae, volume, device) for volume in load_volumes(data_folder, case_ids)]
    latents = np.stack([pair[0] for pair in pairs])
    tokens = np.stack([pair[1] for pair in pairs])
    meta_path.unlink(missing_ok=True)  # the arrays are replaced first; the metadata written last marks them done
    write_npy(cache_dir / "latents.npy", latents)
    write_npy(cache_dir / "prompt_tokens.npy", tokens)
    write_json(meta_path, expected)
    return latents, tokens
