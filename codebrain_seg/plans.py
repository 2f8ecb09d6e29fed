"""Read-only views of the plans file (``codebrainPlans.json``): code reads the plans through named properties.

The JSON stays the format and the source of truth (nnU-Net's ``PlansManager`` / ``ConfigurationManager`` do the
same): :class:`Plans` and :class:`Configuration` wrap the loaded dicts without copying, so renaming a key touches
this file only. Checkpoints and written files keep the plain dicts (``.data``), which load with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from codebrain_seg.errors import InputError, UnknownNameError

PLANS_NAME = "codebrainPlans"
PLANS_VERSION = 1


@dataclass(frozen=True)
class LossWeights:
    """The Stage I loss weights of a configuration (CodeBrain: lambda_m 20, lambda_a 5, adversarial 0.1)."""

    lambda_missing: float
    lambda_available: float
    adversarial_weight: float
    adversarial_start_fraction: float

    @property
    def reconstruction(self) -> tuple[float, float]:
        """``(lambda_missing, lambda_available)``."""
        return self.lambda_missing, self.lambda_available


class Configuration:
    """One named configuration of the plans (``plans["configurations"][name]``), read through properties."""

    def __init__(self, data: Mapping[str, Any], name: str = "") -> None:
        self._data = data
        self.name = name

    @property
    def data(self) -> Mapping[str, Any]:
        """The configuration as written in the plans (read-only)."""
        return MappingProxyType(self._data) if isinstance(self._data, dict) else self._data

    def _field(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise InputError(f"plans configuration {self.name!r} has no {key!r} field: the plans are older than "
                             f"this code or were edited; rerun codebrain_plan_and_preprocess --replan") from None

    @property
    def kind(self) -> str:
        """``2d_slices`` (CodeBrain) or ``3d_volume`` (CoPeDiT)."""
        return str(self._data.get("kind", "2d_slices"))

    @property
    def data_identifier(self) -> str:
        """Folder of the preprocessed arrays under the preprocessed dataset."""
        return str(self._field("data_identifier"))

    @property
    def network(self) -> Mapping[str, Any]:
        """Network sizes (widths, depth; CoPeDiT: the ``vae`` / ``dit`` blocks)."""
        return self._field("network")

    @property
    def crop_size(self) -> list[int]:
        """In-plane crop (2D) or box (3D) in voxels."""
        return [int(s) for s in self._field("crop_size")]

    @property
    def slicing_axis(self) -> int:
        """Axis (RAS voxel order) along which 2D slices are taken."""
        return int(self._field("slicing_axis"))

    @property
    def fsq_levels(self) -> list[int]:
        """FSQ levels of the planned code (CodeBrain)."""
        return [int(level) for level in self._field("fsq_levels")]

    @property
    def target_size(self) -> list[int]:
        """Volume size the 3D configuration resizes to (CoPeDiT)."""
        return [int(s) for s in self._field("target_size")]

    @property
    def evaluation_slices(self) -> Any:
        """Slices scored by validation and evaluation (count or rule)."""
        return self._field("evaluation_slices")

    @property
    def batch_size(self) -> int:
        """Planned batch size."""
        return int(self._field("batch_size"))

    @property
    def vq_codebook_size(self) -> int | None:
        """Codebook size of the VQ ablation (plans written before it existed: None)."""
        value = self._data.get("vq_codebook_size")
        return None if value is None else int(value)

    @property
    def optimisation(self) -> Mapping[str, Any]:
        """The optimisation block (stages, optimisers, loss, schedule)."""
        return self._field("optimisation")

    def stage(self, number: int) -> Mapping[str, Any]:
        """``{"iterations", "batch_size", ...}`` of a training stage."""
        try:
            return self.optimisation[f"stage{number}"]
        except KeyError:
            raise InputError(f"plans configuration {self.name!r} plans no stage {number}") from None

    def validation_every(self, number: int) -> int | None:
        """The planned validation cadence of a stage in iterations (None: not planned, the trainer's default)."""
        value = self.stage(number).get("val_every")
        return None if value is None else int(value)

    @property
    def timing(self) -> Mapping[str, Any] | None:
        """The planner's predicted seconds per stage and the step costs behind them (None: not planned)."""
        return self._data.get("timing")

    def optimizer(self, name: str) -> Mapping[str, Any]:
        """An optimiser spec (``generator_optimizer``, ``discriminator_optimizer``, ``dit_optimizer``, ...)."""
        try:
            return self.optimisation[name]
        except KeyError:
            raise InputError(f"plans configuration {self.name!r} has no optimiser {name!r}") from None

    def optimisation_option(self, name: str, default: Any = None) -> Any:
        """An optional entry of the optimisation block (``gradient_clip``, ``augmentation``, ...) or ``default``."""
        return self.optimisation.get(name, default)

    @property
    def loss(self) -> LossWeights:
        """The Stage I loss weights."""
        loss = self.optimisation["loss"]
        return LossWeights(float(loss["lambda_missing"]), float(loss["lambda_available"]),
                           float(loss.get("adversarial_weight", 0.0)), float(loss.get("adversarial_start_fraction",
                                                                                      0.0)))

    @property
    def min_brain_fraction(self) -> float:
        """Training slices need at least this fraction of brain pixels."""
        return float(self._data.get("training_slices", {}).get("min_brain_fraction", 0.0))


class Plans:
    """The whole plans file, read through properties; ``configuration(name)`` gives a :class:`Configuration`."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    @property
    def data(self) -> Mapping[str, Any]:
        """The plans as written (read-only)."""
        return MappingProxyType(self._data) if isinstance(self._data, dict) else self._data

    @property
    def plans_name(self) -> str:
        """``codebrainPlans`` (part of every results-folder name)."""
        return str(self._data.get("plans_name", PLANS_NAME))

    @property
    def version(self) -> int:
        """Plans format version (1 so far)."""
        return int(self._data.get("plans_version", 1))

    @property
    def channel_names(self) -> list[str]:
        """The sequences in channel order."""
        return list(self._data["channel_names"])

    @property
    def num_channels(self) -> int:
        """Number of sequences."""
        return len(self._data["channel_names"])

    @property
    def upper_percentile(self) -> float:
        """Brain percentile each sequence is divided by (99.5)."""
        return float(self._data["normalization"]["upper_percentile"])

    def reference_upper(self, channel: str) -> float:
        """The training set's median upper brain percentile of a sequence (an imputed sequence's scale)."""
        try:
            return float(self._data["intensity_reference"][channel]["median_p99_5"])
        except KeyError:
            raise InputError(f"the plans have no intensity reference for sequence {channel!r}") from None

    @property
    def reference_uppers(self) -> list[float]:
        """:meth:`reference_upper` of every channel, in channel order."""
        return [self.reference_upper(name) for name in self.channel_names]

    @property
    def configuration_names(self) -> list[str]:
        """Names of the planned configurations."""
        return sorted(self._data.get("configurations", {}))

    def has_configuration(self, name: str) -> bool:
        """Whether a configuration of this name is planned."""
        return name in self._data.get("configurations", {})

    def configuration(self, name: str) -> Configuration:
        """A configuration by name; the error lists the planned ones."""
        if not self.has_configuration(name):
            raise UnknownNameError(f"configuration {name!r} is not in the plans; planned: "
                                   f"{', '.join(self.configuration_names)} (plan it with codebrain_plan_and_preprocess "
                                   f"-c {name})")
        return Configuration(self._data["configurations"][name], name)


# ---- checking a plans file (hand edits, non-finite values) -------------------------------------------------

# Fields whose value must be a list of positive integers / a positive integer when present, per configuration.
_POSITIVE_LISTS = ("crop_size", "code_grid", "fsq_levels", "box_size", "target_size")
_POSITIVE_INTS = ("batch_size", "downsamplings")


def _non_finite(value: Any, where: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return where
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = _non_finite(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _non_finite(item, f"{where}[{index}]")
            if found:
                return found
    return None


def _is_int(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_plans(plans: Any, source: str = "the plans") -> None:
    """Refuse plans a hand edit or a bad case broke, naming the field and the file (``source``).

    Checks that every value is finite (a NaN from a bad case must never reach training or imputation), the
    channel names, the intensity reference, and the integer fields of every configuration (crop size, FSQ levels,
    batch sizes, stage iterations, slicing axis).

    Raises:
        InputError: the first bad field, named ``configurations.<name>.<field>``.
    """
    hint = "fix the field, or rerun codebrain_plan_and_preprocess --replan to write the plans again"
    if not isinstance(plans, Mapping):
        raise InputError(f"{source} is not a plans file (a JSON object with 'configurations'); {hint}")
    bad = _non_finite(plans, "")
    if bad:
        raise InputError(f"{source}: {bad} is not a finite number (NaN or infinite, from a case with NaN or "
                         f"infinite voxels?); {hint}")
    names = plans.get("channel_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise InputError(f"{source}: channel_names must be a list of sequence names, got {names!r}; {hint}")
    for name in names:
        upper = plans.get("intensity_reference", {}).get(name, {}).get("median_p99_5")
        if upper is not None and (not isinstance(upper, (int, float)) or isinstance(upper, bool) or upper <= 0):
            raise InputError(f"{source}: intensity_reference.{name}.median_p99_5 must be a positive number, got "
                             f"{upper!r}; {hint}")
    configurations = plans.get("configurations")
    if not isinstance(configurations, Mapping) or not configurations:
        raise InputError(f"{source}: configurations must be an object of named configurations; {hint}")
    for config_name, config in configurations.items():
        where = f"configurations.{config_name}"
        if not isinstance(config, Mapping):
            raise InputError(f"{source}: {where} must be an object, got {config!r}; {hint}")
        for key in _POSITIVE_LISTS:
            value = config.get(key)
            if value is not None and (not isinstance(value, list) or not value
                                      or not all(_is_int(v) for v in value)):
                raise InputError(f"{source}: {where}.{key} must be a list of positive integers, got {value!r}; "
                                 f"{hint}")
        for key in _POSITIVE_INTS:
            value = config.get(key)
            if value is not None and not _is_int(value, 0 if key == "downsamplings" else 1):
                raise InputError(f"{source}: {where}.{key} must be a positive integer, got {value!r}; {hint}")
        axis = config.get("slicing_axis")
        if axis is not None and axis not in (0, 1, 2):
            raise InputError(f"{source}: {where}.slicing_axis must be 0, 1 or 2, got {axis!r}; {hint}")
        optimisation = config.get("optimisation", {})
        for stage in ("stage1", "stage2"):
            block = optimisation.get(stage, {}) if isinstance(optimisation, Mapping) else {}
            for key in ("iterations", "batch_size"):
                value = block.get(key) if isinstance(block, Mapping) else None
                if value is not None and not _is_int(value):
                    raise InputError(f"{source}: {where}.optimisation.{stage}.{key} must be a positive integer, "
                                     f"got {value!r}; {hint}")
