"""Training slices sampled from the preprocessed volumes, augmented with batchgenerators, exactly resumable.

Every random choice of a batch (which slices, which augmentation) is a pure function of
``(seed, rank, iteration)``: a resumed run, or a run with more or fewer background workers, draws exactly the
batches an uninterrupted run draws. Slices are assigned like ``torch``'s ``DistributedSampler``: each epoch is
one permutation of all training slices (seeded by ``(seed, epoch)``, the same on every rank) and consecutive
batches of it go to consecutive ranks, so ranks never draw the same slice within an epoch.

Augmentations (those of the CodeBrain reference implementation), in order, each with p = 0.5 per slice and the
same warp for all channels of a slice: elastic deformation; horizontal flip; vertical flip; rotation by
k x 90 degrees (k in 1..3; a non-square crop allows only k = 2, as a quarter turn would not fit the crop);
affine (rotation +-15 degrees, scale 0.9-1.1, translation +-10 %); bilinear interpolation, zero padding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from batchgenerators.dataloading.data_loader import DataLoader
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import (
    SingleThreadedAugmenter,
)
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.spatial_transforms import (
    MirrorTransform,
    Rot90Transform,
    SpatialTransform,
)

from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import read_json

AUGMENTATION_PROBABILITY = 0.5
MAX_ROTATION_DEGREES = 15.0
SCALE_RANGE = (0.9, 1.1)
MAX_TRANSLATION_FRACTION = 0.1
# The reference's elastic warp (kornia: Gaussian sigma 32 px, alpha 1 in normalised coordinates) at 256 x 256,
# rescaled to the crop: sigma in pixels scales with the image, alpha = 1 normalised unit = half the image.
REFERENCE_ELASTIC_SIGMA = 32.0 / 256.0


def iteration_rng(seed: int, rank: int, iteration: int, stream: int = 0) -> np.random.Generator:
    """Generator for one ``(seed, rank, iteration)``; ``stream`` separates independent uses (data, masks, ...)."""
    return np.random.default_rng([int(seed), int(rank), int(iteration), int(stream)])


PATTERN_STREAM = 1  # random stream of the missing pattern, independent of the data stream (0)


def missing_patterns(num_channels: int) -> list[tuple[bool, ...]]:
    """All ``2^C - 2`` availability patterns (True = available), neither empty nor complete."""
    return [tuple(bool(code >> (num_channels - 1 - c) & 1) for c in range(num_channels))
            for code in range(1, 2 ** num_channels - 1)]


def single_missing_patterns(num_channels: int) -> list[tuple[bool, ...]]:
    """The C patterns with exactly one missing modality (validation / model selection), in channel order."""
    return [tuple(c != missing for c in range(num_channels)) for missing in range(num_channels)]


def draw_missing_pattern(seed: int, rank: int, iteration: int, num_channels: int) -> tuple[bool, ...]:
    """The pattern of one iteration, uniform over :func:`missing_patterns`, shared by the whole batch."""
    patterns = missing_patterns(num_channels)
    return patterns[int(iteration_rng(seed, rank, iteration, PATTERN_STREAM).integers(len(patterns)))]


ANCHOR_STREAM = 2  # random stream of the v1 variant's anchor and source modalities


def draw_anchor_and_source(seed: int, rank: int, iteration: int, pattern: Sequence[bool]) -> tuple[int, int]:
    """v1 Stage I: ``(anchor, source)`` of one iteration, uniform among the pattern's missing / available channels.

    With the pattern uniform over :func:`missing_patterns`, every ordered pair ``anchor != source`` is equally
    likely (the draw is symmetric under permuting channels), as the v1 paper's two random choices.
    """
    missing = [c for c, given in enumerate(pattern) if not given]
    given = [c for c, flag in enumerate(pattern) if flag]
    if not missing or not given:
        raise InputError(f"the pattern must have a missing and an available channel, got {tuple(pattern)}")
    rng = iteration_rng(seed, rank, iteration, ANCHOR_STREAM)
    return missing[int(rng.integers(len(missing)))], given[int(rng.integers(len(given)))]


def single_available_patterns(num_channels: int) -> list[tuple[bool, ...]]:
    """The C patterns with exactly one available modality, in channel order (v1 source x anchor validation)."""
    return [tuple(c == given for c in range(num_channels)) for given in range(num_channels)]


class VolumeCache:
    """Preprocessed volumes ``CASE.npy`` (C, S, H, W) opened lazily as read-only memory maps."""

    def __init__(self, folder: Path, case_ids: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        self._open: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps must not be pickled into worker processes (they would be copied in full).
        return {"folder": self.folder, "case_ids": self.case_ids, "_open": {}}

    def volume(self, case_id: str) -> np.ndarray:
        """The memory-mapped volume of one case."""
        if case_id not in self._open:
            path = self.folder / f"{case_id}.npy"
            if not path.is_file():
                raise MissingFileError(f"{path} is missing: rerun codebrain_plan_and_preprocess for this dataset")
            self._open[case_id] = np.load(path, mmap_mode="r")
        return self._open[case_id]

    def slices(self, entries: Sequence[tuple[int, int]]) -> np.ndarray:
        """Stack ``(case index, slice index)`` entries into a float32 array ``(N, C, H, W)``."""
        return np.stack([np.asarray(self.volume(self.case_ids[case])[:, index], dtype=np.float32)
                         for case, index in entries])


def training_slice_table(folder: Path, case_ids: Sequence[str]) -> np.ndarray:
    """All ``(case index, slice index)`` pairs listed as ``training_slices`` in the cases' properties, ``(N, 2)``."""
    rows = []
    for case_index, case_id in enumerate(case_ids):
        properties_path = Path(folder) / f"{case_id}.json"
        if not properties_path.is_file():
            raise MissingFileError(f"{properties_path} is missing: rerun codebrain_plan_and_preprocess")
        for index in read_json(properties_path)["training_slices"]:
            rows.append((case_index, int(index)))
    if not rows:
        raise InputError(f"no training slices in {folder} for cases {list(case_ids)[:5]}...")
    return np.asarray(rows, dtype=np.int64)


def middle_slices(folder: Path, case_ids: Sequence[str], max_per_case: int) -> list[tuple[int, int]]:
    """Up to ``max_per_case`` consecutive brain slices from the middle of each case (fixed validation set)."""
    if max_per_case < 1:
        raise InputError(f"max_per_case must be >= 1, got {max_per_case}")
    entries = []
    for case_index, case_id in enumerate(case_ids):
        brain = read_json(Path(folder) / f"{case_id}.json")["training_slices"]
        start = max(0, (len(brain) - max_per_case) // 2)
        entries += [(case_index, int(index)) for index in brain[start:start + max_per_case]]
    return entries


class RandomApplyPerSample(AbstractTransform):
    """Apply ``transform`` to each sample of the batch independently with probability ``p``."""

    def __init__(self, transform: AbstractTransform, p: float) -> None:
        self.transform = transform
        self.p = p

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        """Transform the chosen samples of ``data_dict['data']`` ``(B, C, H, W)`` as one sub-batch."""
        data = data_dict["data"]
        chosen = np.flatnonzero(np.random.uniform(size=len(data)) < self.p)
        if len(chosen):
            data[chosen] = self.transform(data=data[chosen])["data"]
        return data_dict


def build_augmentation(crop_size: Sequence[int]) -> Compose:
    """The reference's spatial augmentations for slices of ``crop_size`` (see module docstring)."""
    crop = [int(size) for size in crop_size]
    mean_size = float(np.mean(crop))
    angle = np.deg2rad(MAX_ROTATION_DEGREES)
    elastic = SpatialTransform(
        crop, do_elastic_deform=True, alpha=(mean_size / 2,) * 2,
        sigma=(REFERENCE_ELASTIC_SIGMA * mean_size,) * 2, do_rotation=False, do_scale=False,
        border_mode_data="constant", border_cval_data=0, order_data=1, random_crop=False,
        p_el_per_sample=AUGMENTATION_PROBABILITY)
    # The patch centre is drawn uniformly within +-10 % of the image centre: that is the translation.
    affine = SpatialTransform(
        crop, patch_center_dist_from_border=[size * (0.5 - MAX_TRANSLATION_FRACTION) for size in crop],
        do_elastic_deform=False, do_rotation=True, angle_x=(-angle, angle), do_scale=True, scale=SCALE_RANGE,
        border_mode_data="constant", border_cval_data=0, order_data=1, random_crop=True,
        p_rot_per_sample=1.0, p_scale_per_sample=1.0)
    quarter_turns = (1, 2, 3) if crop[0] == crop[1] else (2,)
    return Compose([
        elastic,
        MirrorTransform(axes=(0, 1)),  # each axis flipped with p = 0.5, independently
        Rot90Transform(num_rot=quarter_turns, axes=(0, 1), p_per_sample=AUGMENTATION_PROBABILITY),
        RandomApplyPerSample(affine, AUGMENTATION_PROBABILITY),
    ])


class SliceDataLoader(DataLoader):
    """Infinite batches ``{'data': (B, C, H, W) float32, 'keys', 'iteration'}`` of training slices.

    Args:
        folder: preprocessed folder of the configuration (``CASE.npy`` + ``CASE.json``).
        case_ids: training cases of the fold.
        batch_size: slices per batch on this rank.
        seed, rank, world_size: the stream is a pure function of these and the iteration.
        start_iteration: iteration of the first batch (a resumed run starts at its checkpoint's iteration).
        num_workers: number of worker processes that will share the stream (0 = in the main process).
    """

    def __init__(self, folder: Path, case_ids: Sequence[str], batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, start_iteration: int = 0, num_workers: int = 0) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.cache = VolumeCache(folder, case_ids)
        self.table = training_slice_table(folder, case_ids)
        super().__init__(self.table, batch_size, max(1, num_workers), None, infinite=True)
        self.indices = list(range(len(self.table)))
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.start_iteration = int(start_iteration)
        self.calls = 0
        self._permutation: tuple[int, np.ndarray] | None = None

    def _epoch_permutation(self, epoch: int) -> np.ndarray:
        if self._permutation is None or self._permutation[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.table))
            self._permutation = (epoch, order)
        return self._permutation[1]

    def slice_entries(self, iteration: int) -> np.ndarray:
        """``(case index, slice index)`` rows ``(B, 2)`` this rank trains on at ``iteration``."""
        first = (iteration * self.world_size + self.rank) * self.batch_size
        rows = []
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, len(self.table))
            rows.append(self.table[self._epoch_permutation(epoch)[offset]])
        return np.asarray(rows)

    def generate_train_batch(self) -> dict[str, Any]:
        """Next batch of this worker; seeds numpy so the transforms applied after it are reproducible too."""
        # Worker t of n produces iterations t, t + n, t + 2n, ...; the augmenter hands them out round-robin.
        iteration = self.start_iteration + self.thread_id + self.number_of_threads_in_multithreaded * self.calls
        self.calls += 1
        entries = self.slice_entries(iteration)
        data = self.cache.slices([tuple(row) for row in entries])
        np.random.seed(int(iteration_rng(self.seed, self.rank, iteration).integers(2 ** 32)))
        keys = [f"{self.cache.case_ids[case]}:{index}" for case, index in entries]
        return {"data": data, "keys": keys, "iteration": iteration}


def training_batches(folder: Path, case_ids: Sequence[str], batch_size: int, crop_size: Sequence[int], seed: int,
                     rank: int = 0, world_size: int = 1, start_iteration: int = 0, num_workers: int = 0,
                     augment: bool = True, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """The augmented batch stream (MultiThreadedAugmenter with workers, SingleThreadedAugmenter without)."""
    loader = SliceDataLoader(folder, case_ids, batch_size, seed, rank, world_size, start_iteration, num_workers)
    transform = build_augmentation(crop_size) if augment else None
    if num_workers <= 0:
        return SingleThreadedAugmenter(loader, transform)
    return MultiThreadedAugmenter(loader, transform, num_workers, num_cached_per_queue=2,
                                  seeds=[seed + worker for worker in range(num_workers)], pin_memory=pin_memory)


def close_batches(stream: Iterator[dict[str, Any]]) -> None:
    """Stop a stream's worker processes, if it has any."""
    if isinstance(stream, MultiThreadedAugmenter):
        stream._finish()
