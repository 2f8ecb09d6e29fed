"""The one method registry: for every method name, how it trains (its stage trainers, options, results folder,
default configurations) and how it imputes (the imputer built from an ``ImputationContext``).

``codebrain_train --method``, ``codebrain_impute --method`` and the evaluations' ``--methods`` all read this
table. A method without stages imputes only (``zero``, ``mean``); a name may fix trained options of another
method (``copedit-mask`` = CoPeDiT trained with mask-code prompts), so an evaluation can put it in a row. Adding a
method is one :class:`Method` here (or :func:`register_method`); no other method changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from codebrain_seg.device import uses_gpu
from codebrain_seg.errors import InputError, UnknownNameError
from codebrain_seg.inference.baselines import MeanOfAvailable, ZeroFill
from codebrain_seg.inference.request import ImputationContext, Imputer
from codebrain_seg.inference.slice_baselines import LinearSlices, NearestSlices, SliceImputer, ZeroSlices
from codebrain_seg.lazy import Lazy
from codebrain_seg.results_layout import METHOD_FOLDERS
from codebrain_seg.variants import (
    CODEBRAIN_ABLATIONS,
    CODEBRAIN_SHARED_STAGES,
    COPEDIT_ABLATIONS,
    COPEDIT_SHARED_STAGES,
)

# The learned methods' imputers and trainers are imported when first built (codebrain_seg.lazy): a command that
# imputes with CodeBrain need not load CoPeDiT's networks nor any trainer. The targets are the modules this layer
# may import (inference below it, trainers beside it).
CodeBrainImputer = Lazy("codebrain_seg.inference.codebrain:CodeBrainImputer")
CoPeDiTImputer = Lazy("codebrain_seg.inference.copedit:CoPeDiTImputer")
resolve_configuration = Lazy("codebrain_seg.inference.copedit:resolve_configuration")
CoPeDiTSliceImputer = Lazy("codebrain_seg.inference.copedit_slices:CoPeDiTSliceImputer")
RegressionImputer = Lazy("codebrain_seg.inference.regression:RegressionImputer")
CoPeVAETrainer = Lazy("trainers.copedit.stage1:CoPeVAETrainer")
MDiT3DTrainer = Lazy("trainers.copedit.stage2:MDiT3DTrainer")
RegressionTrainer = Lazy("trainers.regression:RegressionTrainer")
CodeBrainStageOneTrainer = Lazy("trainers.stage1:CodeBrainStageOneTrainer")
CodeBrainStageTwoTrainer = Lazy("trainers.stage2:CodeBrainStageTwoTrainer")

ConfigurationResolver = Callable[[str | int, int | str, str, Mapping[str, Any] | None], str]


@dataclass(frozen=True)
class Method:
    """A method of the registry.

    Attributes:
        name: the name commands take (``--method``).
        imputer: builds the method's imputer from an :class:`ImputationContext`.
        description: one line for ``--help`` and the docs.
        folder_name: results-folder prefix of a trainable method (``CodeBrain``).
        stages: stage number -> trainer class (or its :class:`codebrain_seg.lazy.Lazy`), in training order (empty:
            nothing to train).
        ablations: the options ``codebrain_train --ablation`` (or CoPeDiT's ``--prompts``/``--layout``) accepts.
        shared_stages: option -> stages it shares with the plain method's run (reused, not retrained).
        configurations: default plans configurations (with a GPU, without one).
        options: imputer options this name fixes (a trained option of another method).
        resolve_configuration: for a method whose model lives in a configuration of its own (CoPeDiT's 3D
            volumes): ``(dataset, fold, device, options) -> configuration`` when none is given.
        slice_imputer: builds the method's missing-slice imputer (``codebrain_seg.inference.slice_baselines``
            interface) for a cardiac dataset; None: the method fills sequences only.
    """

    name: str
    imputer: Callable[[ImputationContext], Imputer]
    description: str = ""
    folder_name: str | None = None
    stages: Mapping[int, Callable[..., Any]] = field(default_factory=dict)
    ablations: tuple[str, ...] = ("none",)
    shared_stages: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    configurations: tuple[str, str] = ("2d", "2d_cpu")
    options: Mapping[str, Any] = field(default_factory=dict)
    resolve_configuration: ConfigurationResolver | None = None
    slice_imputer: Callable[[ImputationContext], SliceImputer] | None = None

    @property
    def trainable(self) -> bool:
        """Whether the method has stages to train."""
        return bool(self.stages)

    def default_configuration(self, device: str = "auto") -> str:
        """The method's paper configuration when a GPU will be used, else its CPU one."""
        gpu, cpu = self.configurations
        return gpu if uses_gpu(device) else cpu

    def configuration_for(self, dataset: str | int, fold: int | str, device: str = "cpu",
                          options: Mapping[str, Any] | None = None) -> str | None:
        """The configuration a method with its own configurations uses when none is given (else None)."""
        if self.resolve_configuration is None:
            return None
        return self.resolve_configuration(dataset, fold, device, {**(options or {}), **self.options})

    def build_imputer(self, context: ImputationContext) -> Imputer:
        """The method's imputer for ``context`` (the name's fixed options applied)."""
        if self.options:
            context = replace(context, options={**context.options, **self.options})
        return self.imputer(context)

    @property
    def fills_slices(self) -> bool:
        """Whether the method fills missing slices of a short-axis stack."""
        return self.slice_imputer is not None

    def build_slice_imputer(self, context: ImputationContext) -> SliceImputer:
        """The method's missing-slice imputer for ``context`` (the name's fixed options applied)."""
        if self.slice_imputer is None:
            raise InputError(f"method {self.name!r} fills missing sequences, not missing slices; for a short-axis "
                             f"stack use one of {', '.join(slice_methods())}")
        if self.options:
            context = replace(context, options={**context.options, **self.options})
        return self.slice_imputer(context)


def _slices_only(name: str) -> Callable[[ImputationContext], Imputer]:
    def refuse(context: ImputationContext) -> Imputer:
        raise InputError(f"method {name!r} fills missing slices of a short-axis stack (a cardiac dataset), not "
                         "missing sequences")
    return refuse


METHODS: dict[str, Method] = {
    "zero": Method("zero", ZeroFill, "the missing sequences (or slices) stay zero (lower bound)",
                   slice_imputer=ZeroSlices),
    "linear": Method("linear", _slices_only("linear"), "missing slices: linear interpolation between the nearest "
                     "given slices", slice_imputer=LinearSlices),
    "nearest": Method("nearest", _slices_only("nearest"), "missing slices: a copy of the nearest given slice",
                      slice_imputer=NearestSlices),
    "mean": Method("mean", MeanOfAvailable, "rescaled mean of the given sequences"),
    "codebrain": Method("codebrain", CodeBrainImputer, "CodeBrain (CVPR 2026; variants: --variant, --ablation)",
                        METHOD_FOLDERS["codebrain"], {1: CodeBrainStageOneTrainer, 2: CodeBrainStageTwoTrainer},
                        tuple(CODEBRAIN_ABLATIONS), CODEBRAIN_SHARED_STAGES),
    "regression": Method("regression", RegressionImputer, "direct-regression baseline (E_c + D, no codes)",
                         METHOD_FOLDERS["regression"], {1: RegressionTrainer}),
    "copedit": Method("copedit", CoPeDiTImputer, "CoPeDiT (CoPeVAE + MDiT3D latent diffusion, 3D volumes)",
                      METHOD_FOLDERS["copedit"], {1: CoPeVAETrainer, 2: MDiT3DTrainer}, tuple(COPEDIT_ABLATIONS),
                      COPEDIT_SHARED_STAGES, ("3d_copedit", "3d_copedit_cpu"),
                      resolve_configuration=resolve_configuration, slice_imputer=CoPeDiTSliceImputer),
}
# CoPeDiT trained with ``codebrain_train --method copedit --prompts mask`` (binary mask codes as prompts).
METHODS["copedit-mask"] = replace(METHODS["copedit"], name="copedit-mask", stages={}, options={"prompts": "mask"},
                                  description="CoPeDiT's mask-prompt ablation (trained with --prompts mask)")


def register_method(method: Method) -> None:
    """Add a method to the registry (its name must be new)."""
    if method.name in METHODS:
        raise InputError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method


def get_method(name: str) -> Method:
    """A registered method; the error lists the known names."""
    if name not in METHODS:
        raise UnknownNameError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def trainable_methods() -> list[str]:
    """Names ``codebrain_train --method`` accepts."""
    return sorted(name for name, method in METHODS.items() if method.trainable)


def imputation_methods() -> list[str]:
    """Names ``codebrain_impute --method`` and the evaluations' ``--methods`` accept."""
    return sorted(METHODS)


def slice_methods() -> list[str]:
    """Names that fill missing slices (``codebrain_impute`` and ``codebrain_evaluate_slices`` on a cardiac dataset)."""
    return sorted(name for name, method in METHODS.items() if method.fills_slices)


def get_imputer(name: str, context: ImputationContext) -> Imputer:
    """Build a registered method's imputer; the error lists the known names."""
    if name not in METHODS:
        raise UnknownNameError(f"unknown imputation method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name].build_imputer(context)
