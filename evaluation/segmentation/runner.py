"""Segmenting and scoring cases with one segmenter, everything cached as files written atomically.

A :class:`RunState` is one segmenter (its model folder, the channels it takes, how its labels map to WT/TC/ET)
with the folders its files go to; a :class:`CaseRunner` imputes, segments and scores one case under it, reusing
every file made before. Both protocols of :mod:`evaluation.segmentation.evaluate` run through these.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.geometry import from_canonical, to_canonical
from codebrain_seg.inference.request import ImputationContext, Imputer
from codebrain_seg.io import read_json, read_nifti, write_json, write_nifti
from codebrain_seg.raw_dataset import FILE_ENDING
from codebrain_seg.run.methods import METHODS, get_imputer
from evaluation.segmentation import nnunet_bridge as bridge
from evaluation.segmentation import report
from evaluation.segmentation.cases import FULL, EvaluationCase, Scenario
from evaluation.segmentation.label_mapping import PROJECT_REGIONS, RegionMap
from evaluation.segmentation.metrics import REGION_NAMES, region_scores

logger = logging.getLogger(__name__)

MISSING = "missing"  # the segmenter that takes the available sequences only (CoPeDiT's "Missing" baseline)


@dataclass
class SegmentationEvaluation:
    """What a run produced and how much of it was reused from the cache."""

    output_dir: Path
    table: dict[str, Any]
    files: dict[str, Path]
    predicted: int = 0
    reused: int = 0
    imputed: int = 0
    imputed_reused: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    retrained: "SegmentationEvaluation | None" = None  # protocol 'both': the retrained protocol's result



class CaseRunner:
    """Imputes, segments and scores one evaluation case, reusing every cached file."""

    def __init__(self, state: "RunState", case: EvaluationCase) -> None:
        self.state, self.case = state, case
        self._images: tuple[np.ndarray, dict[str, Any]] | None = None
        self._ground_truth: Any = None

    def model_inputs(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The real channels the segmenter takes, read by its reader (once per case)."""
        if self._images is None:
            files = self.case.images if self.state.channels is None else [self.case.images[c]
                                                                          for c in self.state.channels]
            self._images = self.state.segmenter().read_images(files)
        return self._images

    def ground_truth(self) -> Any:
        """The case's label Volume (read once)."""
        if self._ground_truth is None:
            self._ground_truth = read_nifti(self.case.label, dtype=np.int16)
        return self._ground_truth

    def imputed_files(self, method: str, scenario: Scenario) -> list[Path]:
        """Cached imputed channel files of (method, scenario, case); imputes them when missing."""
        folder = self.state.imputed_dir / method / scenario.pattern
        files = [folder / f"{self.case.case_id}_{c:04d}{FILE_ENDING}" for c in scenario.missing]
        if all(f.is_file() for f in files):
            self.state.result.imputed_reused += 1
            return files
        volumes = [read_nifti(path) for path in self.case.images]
        reference = volumes[scenario.available.index(True)]
        # Methods take arrays in RAS voxel order (the registry's convention for learned methods).
        images = to_canonical(np.stack([v.data for v in volumes]).astype(np.float32), reference.affine)
        images[scenario.missing] = 0.0
        filled = from_canonical(self.state.imputer(method).impute(images, scenario.available), reference.affine)
        for channel, path in zip(scenario.missing, files):
            write_nifti(path, filled[channel].astype(np.float32), reference.affine, reference.header)
        self.state.result.imputed += 1
        return files

    def segmentation(self, method: str | None, scenario: Scenario | None) -> Path:
        """Cached segmentation of the case with the real inputs the segmenter takes (method None: all of them, or
        the available ones of a segmenter that takes only those) or with a scenario imputed by ``method``."""
        folder = self.state.output_dir / "segmentations"
        if method is None:
            folder = folder / FULL if scenario is None else folder / MISSING / scenario.pattern
        else:
            folder = folder / method / scenario.pattern
        output = folder / f"{self.case.case_id}{FILE_ENDING}"
        if output.is_file():
            self.state.result.reused += 1
            return output
        images, properties = self.model_inputs()
        if method is not None:
            images = images.copy()
            for channel, path in zip(scenario.missing, self.imputed_files(method, scenario)):
                images[channel] = self.state.segmenter().read_images([path])[0][0]
        logger.info("segmenting %s (%s)", self.case.case_id, FULL if scenario is None else
                    f"{method or 'available sequences only'}, missing {scenario.label}")
        self.state.segmenter().predict(images, properties, output)
        self.state.result.predicted += 1
        return output

    def scores(self, segmentation: Path) -> dict[str, dict[str, float]]:
        """Region scores of a segmentation file, cached beside it (recomputed when the file changed)."""
        cache = segmentation.with_name(segmentation.name[: -len(FILE_ENDING)] + ".scores.json")
        stamp = segmentation.stat().st_mtime_ns
        regions = self.state.mapping_key()
        if cache.is_file():
            cached = read_json(cache)
            if cached.get("segmentation_mtime_ns") == stamp and cached.get("regions") == regions:
                return cached["scores"]
        truth = self.ground_truth()
        predicted = read_nifti(segmentation, dtype=np.int16).data
        if predicted.shape != truth.data.shape:
            raise InputError(f"{segmentation}: shape {predicted.shape} differs from the label map's "
                             f"{truth.data.shape} ({self.case.label})")
        mapping = self.state.mapping
        scores = region_scores(predicted, truth.data, truth.spacing, prediction_regions=mapping.prediction.regions,
                               truth_regions=mapping.truth.regions)
        write_json(cache, {"segmentation_mtime_ns": stamp, "regions": regions, "scores": scores})
        return scores


class RunState:
    """What a run of one segmenter shares between cases: folders, the lazily built segmenter, the imputers, the
    channels the segmenter takes (None: all), how its labels map to the regions, counters."""

    def __init__(self, model: bridge.ModelInfo | None, imputers: dict[str, Imputer], output_dir: Path,
                 imputed_dir: Path,
                 device: str, tile_step_size: float, use_mirroring: bool, precision: str = "auto",
                 mapping: bridge.SegmenterMapping | None = None, channels: Sequence[int] | None = None) -> None:
        self.model, self.imputers = model, imputers
        self.channels = None if channels is None else list(channels)  # the channels the segmenter takes
        self.mapping = mapping or bridge.SegmenterMapping([], RegionMap(PROJECT_REGIONS, "project"),
                                                         RegionMap(PROJECT_REGIONS, "project"))
        self.output_dir, self.imputed_dir = output_dir, imputed_dir
        self.device, self.tile_step_size, self.use_mirroring = device, tile_step_size, use_mirroring
        self.precision = precision
        self._segmenter: bridge.Segmenter | None = None
        self.result = SegmentationEvaluation(output_dir, {}, {})

    def mapping_key(self) -> dict[str, Any]:
        """The region definitions scores depend on (a changed ``--seg-label-map`` rescores cached segmentations)."""
        return {"segmenter": self.mapping.prediction.to_json(), "ground_truth": self.mapping.truth.to_json()}

    def segmenter(self) -> bridge.Segmenter:
        """The nnU-Net predictor, loaded on first use (a fully cached rerun never loads it)."""
        if self._segmenter is None:
            self._segmenter = bridge.Segmenter(self.model, self.device, self.tile_step_size, self.use_mirroring,
                                               self.precision)
        return self._segmenter

    def imputer(self, method: str) -> Imputer:
        """A built imputation method."""
        return self.imputers[method]


def build_imputers(method_names: Sequence[str], context: ImputationContext) -> dict[str, Imputer]:
    """Build every requested method up front, so that a missing model fails before any segmenter work."""
    imputers = {}
    for name in method_names:
        try:
            imputers[name] = get_imputer(name, context)
        except FileNotFoundError as error:
            raise MissingFileError(f"imputation method {name!r} cannot be built: {error} (choose methods with "
                                   f"--methods; registered: {', '.join(METHODS)})") from error
    return imputers


def invalidate_if_changed(folder: Path, settings: dict[str, Any]) -> None:
    record = folder / "segmenter.json"
    if record.is_file() and read_json(record) != settings:
        logger.warning("segmenter or prediction settings changed since the cached segmentations in %s were made: "
                       "recomputing them", folder)
        shutil.rmtree(folder / "segmentations", ignore_errors=True)
    write_json(record, settings)


def drop_stale_method_caches(folders: Sequence[Path], imputer: Imputer, method: str) -> None:
    """Delete a method's cached imputations / segmentations made by another model than the one now loaded.

    Each folder keeps an ``imputer.json`` with the method's fingerprint (for a learned method its checkpoints'
    sizes and modification times): a retrained model makes the old files stale, and reusing them would report
    the old model's scores as the new one's. Files of a learned method without a record are of unknown origin and
    are dropped too.
    """
    fingerprint_of = getattr(imputer, "fingerprint", None)
    learned = callable(fingerprint_of)
    fingerprint = {"method": method, **(fingerprint_of() if learned else {})}
    for folder in folders:
        record = folder / "imputer.json"
        known = read_json(record) if record.is_file() else None
        stale = known != fingerprint if known is not None else (learned and folder.is_dir() and any(folder.iterdir()))
        if stale:
            logger.warning("the %s model changed since the cached files in %s were made (or they have no record): "
                           "recomputing them", method, folder)
            shutil.rmtree(folder)
        if known != fingerprint:
            write_json(record, fingerprint)


def score_row(case_id: str, method: str, scenario: Scenario | None, scores: dict[str, dict[str, float]], path: Path,
         output_dir: Path) -> dict[str, Any]:
    """One per-case row of the tables: the input's name, its scenario and every region's Dice and HD95."""
    row: dict[str, Any] = {
        "case": case_id,
        "input": report.display_name(method),
        "pattern": "" if scenario is None else scenario.pattern,
        "missing": "" if scenario is None else scenario.label,
    }
    for metric in ("dice", "hd95"):
        for region in REGION_NAMES:
            row[f"{metric}_{region}"] = scores[region][metric]
        row[f"{metric}_mean"] = float(np.mean([scores[r][metric] for r in REGION_NAMES]))
    row["segmentation"] = str(path.relative_to(output_dir))
    return row
