"""A trained nnU-Net model as the segmenter: what its folder declares (channels, labels, folds), whether it fits a
dataset, and prediction of one case at a time (``nnUNetPredictor``), on the CPU in bf16 where that is native.

An existing nnU-Net model folder (``<Trainer>__<Plans>__<configuration>``, with ``plans.json``, ``dataset.json``
and ``fold_*/checkpoint_final.pth``) is used as it is.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from codebrain_seg.device import native_bf16
from codebrain_seg.errors import InputError
from codebrain_seg.io import atomic_path, read_json
from codebrain_seg.raw_dataset import (
    channel_names,
)
from evaluation.segmentation.label_mapping import RegionMap, match_channels, prediction_regions, truth_regions
from evaluation.segmentation.nnunet_setup import NNUNET_FOLD, SegmenterError, trainer_class

logger = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """What an nnU-Net model folder declares: its channels, labels, folds with a final checkpoint, trainer."""

    folder: Path
    dataset_json: dict[str, Any]
    plans: dict[str, Any]
    folds: list[str]

    @property
    def channel_names(self) -> list[str]:
        """Input channels in file order."""
        return channel_names(self.dataset_json)

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the weights (path, size and mtime of each checkpoint), to invalidate cached predictions."""
        checkpoints = {}
        for fold in self.folds:
            stat = (self.folder / f"fold_{fold}" / "checkpoint_final.pth").stat()
            checkpoints[fold] = [stat.st_size, stat.st_mtime_ns]
        return {"model_folder": str(self.folder.resolve()), "checkpoints": checkpoints}


def read_model_folder(folder: Path) -> ModelInfo:
    """Read and check an nnU-Net model folder (``plans.json``, ``dataset.json``, ``fold_*/checkpoint_final.pth``).

    Numbered folds are used together (nnU-Net's ensemble) when present, else ``fold_all``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SegmenterError(f"segmenter folder {folder} does not exist")
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise SegmenterError(f"{folder} is not an nnU-Net model folder: {name} is missing (expected the "
                                 f"<Trainer>__<Plans>__<configuration> folder that holds fold_X/)")
    trained = sorted(p.name[len("fold_"):] for p in folder.glob("fold_*") if (p / "checkpoint_final.pth").is_file())
    numbered = sorted((f for f in trained if f.isdigit()), key=int)
    folds = numbered or [f for f in trained if f == NNUNET_FOLD]
    if not folds:
        raise SegmenterError(f"{folder} has no fold_*/checkpoint_final.pth: the model is not trained (to the end)")
    return ModelInfo(folder, read_json(folder / "dataset.json"), read_json(folder / "plans.json"), folds)


@dataclass(frozen=True)
class SegmenterMapping:
    """How a segmenter meets a dataset: its channels paired with the dataset's, and WT/TC/ET in both label maps."""

    channels: list[dict[str, str]]
    prediction: RegionMap
    truth: RegionMap

    def to_json(self) -> dict[str, Any]:
        """The mapping as recorded in the results (``table.json`` ``mapping``)."""
        return {"channels": self.channels, "segmenter_regions": self.prediction.to_json(),
                "ground_truth_regions": self.truth.to_json()}

    def describe(self) -> str:
        """One line for the log and the terminal."""
        channels = ", ".join(f"{c['dataset']}->{c['segmenter']}" for c in self.channels)
        regions = "; ".join(f"{r} = segmenter labels {list(self.prediction.regions[r])} vs ground truth "
                            f"{list(self.truth.regions[r])}" for r in ("WT", "TC", "ET"))
        return f"channels {channels}; {regions} ({self.prediction.source})"


def check_compatible(model: ModelInfo, dataset_json: dict[str, Any], label_map: str | None = None
                     ) -> SegmenterMapping:
    """The mapping between a model and a dataset; SegmenterError (saying what was found and expected) unless the
    model takes the dataset's channels in order (through the aliases) and its outputs map to WT, TC and ET
    (``evaluation.segmentation.label_mapping``; ``label_map`` = ``--seg-label-map``)."""
    what = f"segmenter {model.folder}"
    channels = match_channels(model.channel_names, channel_names(dataset_json), what)
    return SegmenterMapping(channels, prediction_regions(model.dataset_json, label_map, what),
                            truth_regions(dataset_json, "the dataset"))


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``fp32`` or ``bf16`` for the segmenter's network on ``device``.

    ``auto``: bf16 autocast on a CPU that computes bf16 natively (AMX or AVX512-BF16, the project's training
    precision ``auto``; about 3x faster for a 3D U-Net), fp32 on other CPUs. On a GPU nnU-Net autocasts itself
    (fp16), so ``auto`` and ``fp32`` leave it alone there.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and device != "cpu":
        raise InputError("bf16 autocast of the segmenter is for CPUs; on a GPU nnU-Net autocasts by itself")
    if precision != "auto":
        return precision
    return "bf16" if device == "cpu" and native_bf16(torch.device("cpu")) else "fp32"


class Segmenter:
    """An nnU-Net model loaded for prediction (``nnUNetPredictor``), one case at a time, images given as files.

    ``precision`` (:func:`resolve_precision`): ``bf16`` runs the network under CPU bf16 autocast (nnU-Net
    accumulates the sliding-window logits in fp16 in any case).
    """

    def __init__(self, model: ModelInfo, device: str = "cpu", tile_step_size: float = 0.5,
                 use_mirroring: bool = True, precision: str = "auto") -> None:
        # lazy: nnunetv2 is heavy to import and needed only here
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.utilities.label_handling.label_handling import (
            determine_num_input_channels,
        )
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        if not 0 < tile_step_size <= 1:
            raise InputError(f"tile_step_size must lie in (0, 1], got {tile_step_size}")
        self.precision = resolve_precision(precision, torch.device(device).type)
        self.model = model
        checkpoints = [torch.load(model.folder / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu",
                                  weights_only=False) for fold in model.folds]
        first = checkpoints[0]
        plans_manager = PlansManager(model.plans)
        configuration_manager = plans_manager.get_configuration(first["init_args"]["configuration"])
        label_manager = plans_manager.get_label_manager(model.dataset_json)
        cls = trainer_class(first["trainer_name"])
        network = cls.build_network_architecture(
            plans_manager, configuration_manager,
            determine_num_input_channels(plans_manager, configuration_manager, model.dataset_json),
            label_manager.num_segmentation_heads, enable_deep_supervision=False)
        parameters = [checkpoint["network_weights"] for checkpoint in checkpoints]
        network.load_state_dict(parameters[0])
        self.predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True,
                                         use_mirroring=use_mirroring, perform_everything_on_device=False,
                                         device=torch.device(device), verbose=False, allow_tqdm=False)
        self.predictor.manual_initialization(network, plans_manager, configuration_manager, parameters,
                                             model.dataset_json, first["trainer_name"],
                                             first.get("inference_allowed_mirroring_axes"))
        self.reader = plans_manager.image_reader_writer_class()
        self.predictions_made = 0

    def read_images(self, files: Sequence[Path]) -> tuple[np.ndarray, dict[str, Any]]:
        """Read a case's channel files with the model's reader: (C, ...) float32 in the reader's axis order."""
        return self.reader.read_images([str(f) for f in files])

    def predict(self, images: np.ndarray, properties: dict[str, Any], output: Path) -> None:
        """Segment one case (arrays from ``read_images``) and write the label map atomically to ``output``."""
        # lazy: nnunetv2 is heavy to import and needed only here
        from nnunetv2.inference.export_prediction import (
            convert_predicted_logits_to_segmentation_with_correct_shape,
        )

        predictor = self.predictor
        properties = copy.deepcopy(properties)
        preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(images, None, properties, predictor.plans_manager,
                                                        predictor.configuration_manager, predictor.dataset_json)
        with torch.autocast("cpu", dtype=torch.bfloat16) if self.precision == "bf16" else nullcontext():
            logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, predictor.plans_manager, predictor.configuration_manager, predictor.label_manager, properties)
        with atomic_path(output) as temp:
            self.reader.write_seg(segmentation, str(temp), properties)
        self.predictions_made += 1


def external_tag(folder: Path) -> str:
    """Folder name under which evaluations of a user's model folder are kept (name + short hash of its path)."""
    digest = hashlib.sha1(str(Path(folder).resolve()).encode()).hexdigest()[:8]
    return f"external__{Path(folder).resolve().name}__{digest}"


