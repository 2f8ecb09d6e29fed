"""The CoPeDiT predictor and the ``copedit`` adapter of the method registry.

CoPeDiT (Liu et al., arXiv 2602.18400) imputes a whole case at once. What happens to a case
(:meth:`CoPeDiTPredictor.impute_arrays`):

1. **Preprocessing as in training** (``planners.volume_preprocessing.prepare_volume``): closest canonical RAS
   voxel order; brain mask = voxels non-zero in any *given* sequence; each given sequence divided by its own
   99.5th brain percentile, clipped to [0, 1]; the planned box centred on the brain; trilinear resize to the
   configuration's volume size.
2. **Mask-free prompts**: the frozen CoPeVAE encodes the given sequences and its prompt encoders turn them into
   the completeness prompts; nothing states what is missing beyond the files given. With ``prompts='mask'`` (a
   model trained with ``--prompts mask``) binary mask codes replace them (the paper's ablation).
3. **Latent diffusion**: deterministic DDIM (EMA weights, fixed seed) from noise in the missing slots, the clean
   given latents re-imposed after every step; the missing latents are quantised and decoded by CoPeVAE.
4. **Back to the original grid**: resized back to the box, pasted into the case's grid (zero outside the box,
   i.e. the field of view the model saw), zero outside the brain mask, in the file's voxel order.

**Intensity scale of an imputed sequence** (as CodeBrain's): the decoded volume is clamped to [0, 1], where 1
stands for a sequence's own 99.5th brain percentile; a missing sequence has none, so it is multiplied by the
training set's median 99.5th brain percentile of that sequence (``plans["intensity_reference"][name]
["median_p99_5"]``). Given sequences are returned unchanged.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from codebrain_seg.checkpoints import (
    check_checkpoint_name,
    check_trained_configuration,
    load_checkpoint,
)
from codebrain_seg.device import uses_gpu
from codebrain_seg.errors import MissingFileError
from codebrain_seg.inference.request import (
    ImputationContext,
    check_request,
    model_fingerprint,
)
from codebrain_seg.networks.copedit import (
    CoPeDiTConfig,
    CoPeVAE,
    MDiT3D,
    MissingSlotDiffusion,
    available_first_order,
    mask_code_prompts,
    reorder_slots,
    restore_slot_order,
)
from codebrain_seg.plans import Plans
from codebrain_seg.results_layout import (
    COPEDIT_FOLDER,
    copedit_folder_name,
    finished_configurations,
    model_fold_dir,
    stage_dir,
)
from planners.volume_preprocessing import prepare_volume, restore_volume

logger = logging.getLogger(__name__)

INTENSITY_SCALE = ("decoded volume clamped to [0, 1] times the training set's median 99.5th brain percentile of the "
                   "sequence (plans intensity_reference median_p99_5)")


class CoPeDiTPredictor:
    """Frozen CoPeVAE + MDiT3D (EMA weights) with the plans they were trained with.

    Args:
        vae: the Stage-I tokenizer.
        dit: MDiT3D with EMA weights, or (per-count layout) a list of m - 1 of them (index = missing count - 1).
        config: the Stage-II configuration (latent scale, diffusion, prompt source).
        plans: the plans dict the model was trained with.
        configuration: name of the ``3d_volume`` configuration.
        device: torch device.
        steps: DDIM steps (default: the configuration's).
        seed: seed of the initial noise (deterministic output).
        model_info: provenance written to sidecars.
    """

    def __init__(self, vae: CoPeVAE, dit: MDiT3D | Sequence[MDiT3D], config: CoPeDiTConfig, plans: dict[str, Any],
                 configuration: str, device: str | torch.device = "cpu", steps: int | None = None, seed: int = 0,
                 model_info: dict[str, Any] | None = None) -> None:
        view = Plans(plans)
        self.plans, self.configuration_name = plans, view.configuration(configuration).name
        self.configuration = plans["configurations"][configuration]
        self.channel_names = view.channel_names
        self.device = torch.device(device)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.per_count = isinstance(dit, (list, tuple))
        self.dit = [m.to(self.device).eval().requires_grad_(False) for m in dit] if self.per_count else \
            dit.to(self.device).eval().requires_grad_(False)
        self.config = config
        self.diffusion = MissingSlotDiffusion(config.diffusion)
        self.steps, self.seed = steps, int(seed)
        # a missing sequence's scale; a cardiac stack keeps its own (per-volume mapping, no dataset reference)
        self.reference_upper = np.array(view.reference_uppers if config.elements == "modalities" else [],
                                        dtype=np.float32)
        self.model_info = dict(model_info or {})
        self.intensity_scale = INTENSITY_SCALE

    @property
    def prompt_source(self) -> str:
        """``'learned'`` (CoPeVAE prompts) or ``'mask'`` (binary mask codes)."""
        return self.config.prompt_source

    @property
    def num_channels(self) -> int:
        """Number of sequences C the model knows."""
        return len(self.channel_names)

    @torch.no_grad()
    def prompt_tokens(self, latents: Tensor, available: Tensor) -> Tensor:
        """Prompts ``(B, P, Dp)`` for latents ``(B, m, e, x, y, z)``: learned from the given sequences' latents,
        or mask codes ``(B, 1, m)`` for a mask-prompt model."""
        if self.prompt_source == "mask":
            return mask_code_prompts(~available.bool())
        return self.vae.prompts(latents, available.bool())

    @torch.no_grad()
    def impute_volume(self, volume: np.ndarray | Tensor, available: Sequence[bool]) -> np.ndarray:
        """Impute the missing channels of one preprocessed volume ``(C, X, Y, Z)`` in [0, 1].

        Returns ``(C, X, Y, Z)`` float32: the given channels as passed, the missing ones decoded and clamped to [0, 1].
        """
        available_np = np.asarray(available, dtype=bool)
        x = torch.as_tensor(np.asarray(volume, dtype=np.float32))[None].to(self.device)
        given = torch.as_tensor(available_np, device=self.device)[None]
        x = x * given[:, :, None, None, None].to(x.dtype)
        latents = self.vae.encode(x)  # the missing slots' latents are never read
        prompts = self.prompt_tokens(latents, given)
        missing = ~given
        if self.per_count:
            order = available_first_order(missing)
            model = self.dit[int(missing.sum()) - 1]
            sampled = self.diffusion.sample(model, reorder_slots(latents, order), reorder_slots(missing, order),
                                            prompts, self.steps, self.seed)
            sampled = restore_slot_order(sampled, order)
        else:
            sampled = self.diffusion.sample(self.dit, latents, missing, prompts, self.steps, self.seed)
        decoded = self.vae.decode(sampled).float().clamp(0, 1)[0].cpu().numpy()
        output = np.asarray(volume, dtype=np.float32).copy()
        output[~available_np] = decoded[~available_np]
        return output

    def impute_arrays(self, images: np.ndarray, available: Sequence[bool], affine: np.ndarray | None = None
                      ) -> np.ndarray:
        """Impute the missing sequences of one case (module docstring).

        Args:
            images: ``(C, X, Y, Z)`` in the files' voxel order and intensities; missing channels are ignored.
            available: C booleans, True = given.
            affine: ``(4, 4)`` voxel-to-world matrix (default identity: the array is in RAS voxel order).

        Returns:
            ``(C, X, Y, Z)`` float32 on the input grid: given channels unchanged, missing ones imputed in the
            documented intensity scale, zero outside the brain and the field of view.
        """
        available = check_request(np.asarray(images), available, self.num_channels)
        images = np.asarray(images, dtype=np.float32)
        affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        volume, mask, properties = prepare_volume(images, available, affine, self.plans, self.configuration)
        imputed = self.impute_volume(volume, available)
        properties = dict(properties, normalization_upper=self.reference_upper.tolist())
        restored = restore_volume(imputed, properties, mask=mask, denormalise=True)
        output = images.copy()
        output[~available] = restored[~available]
        return output


def _ema_models(state: dict[str, Any], config: CoPeDiTConfig) -> MDiT3D | list[MDiT3D]:
    """MDiT3D(s) with the checkpoint's EMA weights (per-count layout: one per missing count)."""
    weights = state["ema"]
    if state.get("layout") == "per_count":
        models = []
        for index in range(config.dit.num_modalities - 1):
            model = MDiT3D(config.dit)
            prefix = f"models.{index}."
            model.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
            models.append(model)
        return models
    model = MDiT3D(config.dit)
    model.load_state_dict(weights)
    return model


def _frozen_vae(state: dict[str, Any], fold_dir: Path) -> dict[str, Any]:
    frozen = state.get("frozen_networks", {})
    if "vae" in frozen:
        return frozen["vae"]
    candidates = [Path(state["stage1_checkpoint"])] if state.get("stage1_checkpoint") else []
    candidates.append(stage_dir(fold_dir.parent.parent / f"{COPEDIT_FOLDER}__{fold_dir.parent.name.split('__', 1)[1]}"
                                / fold_dir.name, 1) / "checkpoint_final.pth")
    for path in candidates:
        if path.is_file():
            return load_checkpoint(path, keys=("networks.vae",), what="CoPeDiT Stage I checkpoint")["networks"]["vae"]
    raise MissingFileError(f"the CoPeDiT Stage I checkpoint of {fold_dir} is missing (looked for "
                            f"{', '.join(str(p) for p in candidates)})")


def predictor_of_context(context: ImputationContext, configuration: str, options: dict[str, Any]
                         ) -> tuple[Any, tuple[Path, str, dict[str, Any]]]:
    """The CoPeDiT predictor of an imputation request: from its model folder, else from the results folder of its
    prompts / layout options; and ``(fold_dir, checkpoint, settings)`` identifying the model for fingerprints."""
    if context.model_dir is not None:
        fold_dir = Path(context.model_dir)
    else:
        # The seed of a seeded experiment (codebrain_ablate --seeds) comes with the request's variant, as CodeBrain's.
        folder = copedit_folder_name(options.get("prompts", "learned"), options.get("layout", "shared"),
                                     context.codebrain.seed_index)
        fold_dir = model_fold_dir(context.dataset, context.fold, configuration, folder)
    checkpoint, seed = options.get("checkpoint") or "final", int(options.get("seed", 0))
    predictor = load_copedit_from_folder(fold_dir, configuration, context.device, checkpoint,
                                         options.get("ddim_steps"), seed)
    return predictor, (fold_dir, checkpoint, {"ddim_steps": options.get("ddim_steps"), "seed": seed})


def load_copedit_from_folder(fold_dir: Path, configuration: str | None = None, device: str = "cpu",
                             checkpoint: str = "final", steps: int | None = None, seed: int = 0) -> CoPeDiTPredictor:
    """Load CoPeVAE + MDiT3D (EMA) from a ``fold_F`` folder written by ``codebrain_train --method copedit``.

    Raises:
        ValueError: unknown checkpoint name, a checkpoint of another method, stage or configuration.
        FileNotFoundError: no such folder, or no finished Stage II in it.
    """
    check_checkpoint_name(checkpoint)
    fold_dir = Path(fold_dir)
    path = fold_dir / "stage2" / f"checkpoint_{checkpoint}.pth"
    if not path.is_file():
        stage1_done = (fold_dir / "stage1" / "checkpoint_final.pth").is_file()
        raise MissingFileError(
            f"no trained CoPeDiT model: {path} is missing (Stage I is "
            f"{'finished' if stage1_done else 'not finished either'}); train it with codebrain_train --method "
            f"copedit --stage {'2' if stage1_done else 'all'}")
    state = load_checkpoint(path, expect={"method": "copedit", "stage": 2}, keys=("ema", "copedit_config"),
                            what="CoPeDiT Stage II checkpoint")
    trained = check_trained_configuration(state, path, configuration)
    config = CoPeDiTConfig.from_dict(state["copedit_config"])
    vae = CoPeVAE(config.vae)
    vae.load_state_dict(_frozen_vae(state, fold_dir))
    info = {"model_folder": str(fold_dir), "checkpoint": f"stage2/{path.name}", "method": "copedit",
            "stage2_iteration": state.get("iteration"), "stage1_iteration": state.get("stage1_iteration"),
            "stage2_best_score": state.get("best_metric"), "prompts": config.prompt_source,
            "training_precision": state.get("precision"),
            "layout": state.get("layout", "shared"), "ddim_steps": steps or config.diffusion.sampling_steps,
            "seed": seed}
    return CoPeDiTPredictor(vae, _ema_models(state, config), config, state["plans"], trained,
                            device, steps, seed, info)


def resolve_configuration(dataset: str | int, fold: int | str, device: str = "cpu",
                          options: dict[str, Any] | None = None,
                          choices: tuple[str, str] = ("3d_copedit", "3d_copedit_cpu")) -> str:
    """The CoPeDiT configuration to use: the one with a finished Stage II for this fold and option, if exactly one;
    else ``3d_copedit`` with a CUDA device and ``3d_copedit_cpu`` without (``codebrain_train``'s default;
    ``choices`` gives another pair, e.g. the cardiac ``3d_cardiac`` / ``3d_cardiac_cpu``)."""
    options = dict(options or {})
    found = finished_configurations(dataset, fold, copedit_folder_name(options.get("prompts", "learned"),
                                                                       options.get("layout", "shared")))
    found = [name for name in found if name in choices] if len(found) > 1 else found
    if len(found) == 1:
        return found[0]
    return choices[0] if str(device).startswith("cuda") and uses_gpu(device) else choices[1]


class CoPeDiTImputer:
    """The ``copedit`` entry of the imputation registry (``codebrain_seg.imputers``).

    Built from an :class:`ImputationContext`: the model is loaded from ``context.model_dir`` when given, else from
    ``$codebrain_results/DatasetXXX_Name/CoPeDiT[-option]__<plans>__<configuration>/fold_F``. The configuration is
    the context's when it is a CoPeDiT (``3d_volume``) one, else ``options['copedit_configuration']``, else
    :func:`resolve_configuration` (the evaluation harness passes the 2D configuration it scores on).
    ``context.options`` may hold ``prompts`` (learned|mask), ``layout`` (shared|per_count), ``checkpoint``,
    ``ddim_steps`` and ``seed``.
    """

    name = "copedit"
    intensity_scale = INTENSITY_SCALE
    resolve_configuration = staticmethod(resolve_configuration)

    def __init__(self, context: ImputationContext) -> None:
        options = dict(context.options)
        configuration = context.configuration
        planned = context.plans.get("configurations", {}).get(configuration, {})
        if planned.get("kind") != "3d_volume":
            configuration = options.get("copedit_configuration") or resolve_configuration(
                context.dataset, context.fold, context.device, options)
        self.predictor, self._model = predictor_of_context(context, configuration, options)
        self.reference_upper = self.predictor.reference_upper

    def fingerprint(self) -> dict[str, Any]:
        """See :func:`codebrain_seg.inference.request.model_fingerprint` (keys the segmentation evaluation's caches)."""
        return model_fingerprint(*self._model)

    def impute(self, images: np.ndarray, available: Sequence[bool], affine: np.ndarray | None = None) -> np.ndarray:
        """See :meth:`CoPeDiTPredictor.impute_arrays` (arrays in RAS voxel order unless ``affine`` is given)."""
        return self.predictor.impute_arrays(images, available, affine)
