"""CoPeDiT for missing slices of a short-axis stack: the ``copedit`` method of the registry on a cardiac dataset.

The trained CoPeVAE-C + MDiT3D-C (``codebrain_train --method copedit -c 3d_cardiac_cpu``) is the brain model's
predictor (:class:`~codebrain_seg.inference.copedit.CoPeDiTPredictor`) with slabs as its slots. What happens to
a stack (:meth:`CoPeDiTSliceImputer.impute_slices`):

1. **Preprocessing as in training** (``planners.cardiac_preprocessing.prepare_stack``): canonical voxel order,
   per-volume 0.5-99.5 percentiles of the *given* slices to [0, 1], the planned in-plane window centred on the
   image (no labels at inference), resized to the configuration's stack and cut into m slabs. A slab is missing
   when the interpolation of any of its slices reads a missing slice; at most m - 1 of the m slabs may be.
2. **Mask-free prompts and missing-slot diffusion** (``CoPeDiTPredictor.impute_volume``): the frozen tokenizer
   encodes the given slabs; deterministic DDIM (EMA weights, seed 0) from noise in the missing slabs with the given
   latents re-imposed after every step; the missing slabs quantised and decoded.
3. **Back to the stack's grid** (``restore_stack``): the completed stack resized back to the window and the native
   slice count, intensities mapped back with the case's own percentiles. Only the **missing slices** are written:
   inside the window from the model, outside it (the part of the image the model never saw) by linear
   interpolation between the nearest given slices. Given slices are returned unchanged.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from codebrain_seg.errors import InputError
from codebrain_seg.inference.copedit import predictor_of_context, resolve_configuration
from codebrain_seg.inference.request import ImputationContext, model_fingerprint
from codebrain_seg.inference.slice_baselines import interpolate_missing_slices
from planners.cardiac_preprocessing import (
    canonical_slice_mask,
    file_slice_axis,
    prepare_stack,
    restore_stack,
    slab_array_to_stack,
    slab_mask,
    touched_target_slices,
)

CARDIAC_CONFIGURATIONS = ("3d_cardiac", "3d_cardiac_cpu")
CARDIAC_KIND = "3d_cardiac_stack"
SLICE_INTENSITY_SCALE = ("the case's own intensities: the model's [0, 1] mapped back with the 0.5th and 99.5th "
                         "percentiles of the given slices")


class CoPeDiTSliceImputer:
    """The ``copedit`` entry of the registry for missing slices, built from an :class:`ImputationContext`.

    The model is loaded from ``context.model_dir`` when given, else from
    ``$codebrain_results/DatasetXXX_Name/CoPeDiT[-mask]__<plans>__<configuration>/fold_F``; the configuration is the
    context's when it is a cardiac one, else the one trained for the fold, else ``3d_cardiac_cpu`` (``3d_cardiac``
    with a CUDA device). ``context.options``: ``prompts``, ``checkpoint``, ``ddim_steps``, ``seed``.
    """

    name = "copedit"
    intensity_scale = SLICE_INTENSITY_SCALE

    def __init__(self, context: ImputationContext) -> None:
        options = dict(context.options)
        configuration = context.configuration
        if context.plans.get("configurations", {}).get(configuration, {}).get("kind") != CARDIAC_KIND:
            configuration = resolve_configuration(context.dataset, context.fold, context.device, options,
                                                  CARDIAC_CONFIGURATIONS)
        self.predictor, self._model = predictor_of_context(context, configuration, options)
        fold_dir = self._model[0]
        if self.predictor.config.elements != "slices":
            raise InputError(f"{fold_dir} holds a brain CoPeDiT model (missing sequences), not a missing-slice one")
        self.configuration = self.predictor.configuration
        self.configuration_name = self.predictor.configuration_name

    @property
    def model_info(self) -> dict[str, Any]:
        """Provenance of the model for the sidecars."""
        return dict(self.predictor.model_info)

    def fingerprint(self) -> dict[str, Any]:
        """See :func:`codebrain_seg.inference.request.model_fingerprint`."""
        return model_fingerprint(*self._model)

    def check_slices(self, shape: Sequence[int], affine: np.ndarray, missing: Sequence[bool],
                     what: str = "the case") -> int:
        """Refuse a request the model cannot fill (before anything is computed or written); returns the file's
        slice axis. The model needs at least one of its m slabs given (module docstring)."""
        configuration = self.configuration
        affine = np.asarray(affine, dtype=np.float64)
        axis, _ = file_slice_axis(affine, int(configuration["slice_axis"]))
        flags = np.asarray(missing, dtype=bool)
        if flags.shape != (int(shape[axis]),) or not flags.any():
            raise InputError(f"{what}: needs one missing-slice flag per slice ({shape[axis]}) and at least one "
                             f"missing slice, got {flags.astype(int).tolist()}")
        canonical = canonical_slice_mask(flags, affine, int(configuration["slice_axis"]))
        depth, m = int(configuration["target_size"][2]), int(configuration["num_slabs"])
        touched = touched_target_slices(canonical, depth)
        if slab_mask(touched, m).all():
            raise InputError(f"{what}: the missing slices {np.flatnonzero(flags).tolist()} of {len(flags)} touch all "
                             f"{m} slabs the model works on (resized slices {np.flatnonzero(touched).tolist()} of "
                             f"{depth}); at least one slab must stay given: impute a shorter missing run")
        return axis

    def impute_slices(self, image: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                      missing: Sequence[bool], what: str = "the case") -> tuple[np.ndarray, dict[str, Any]]:
        """Fill the missing slices of one stack (module docstring).

        Args:
            image: ``(X, Y, Z)`` float32 in the file's voxel order and intensities.
            affine: the file's voxel-to-world matrix.
            spacing: the file's voxel size (mm, file axis order).
            missing: one flag per slice along the file's slice axis (True = missing).
            what: the case, for error messages.

        Returns:
            ``(filled (X, Y, Z) float32, info)``: given slices unchanged; ``info`` names the slabs the model
            generated, the window and the intensity mapping.
        """
        configuration = self.configuration
        image = np.asarray(image, dtype=np.float32)
        affine = np.asarray(affine, dtype=np.float64)
        axis = self.check_slices(image.shape, affine, missing, what)
        flags = np.asarray(missing, dtype=bool)
        canonical = canonical_slice_mask(flags, affine, int(configuration["slice_axis"]))
        slabs, slab_missing, properties = prepare_stack(image, affine, spacing, configuration, canonical, None,
                                                        what)
        m = len(slab_missing)
        imputed = self.predictor.impute_volume(slabs, ~slab_missing)
        values, inside = restore_stack(slab_array_to_stack(imputed), properties)
        fallback = interpolate_missing_slices(image, flags, axis)
        filled = np.moveaxis(image.copy(), axis, -1)
        model_part = np.moveaxis(np.where(inside, values, fallback), axis, -1)
        filled[..., flags] = model_part[..., flags]
        info = {
            "method": "copedit",
            "slice_axis_in_file": axis,
            "generated_slabs": [int(k) for k in np.flatnonzero(slab_missing)],
            "num_slabs": m,
            "touched_target_slices": properties["touched_target_slices"],
            "window": {"start": properties["window_start"], "size": properties["window_size"],
                       "centre": properties["window_centre"], "in_plane_crop_mm": configuration["in_plane_crop_mm"]},
            "outside_window": "linear interpolation between the nearest given slices",
            "intensity_mapping": {"p0.5": properties["intensity_low"], "p99.5": properties["intensity_high"],
                                  "of": "the given slices"},
        }
        return np.moveaxis(filled, -1, axis), info
