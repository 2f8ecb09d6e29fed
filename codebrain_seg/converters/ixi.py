"""IXI -> nnU-Net v2 raw dataset with channels T1, T2, PD, T1 and PD rigidly registered onto the T2 grid.

IXI files are named ``SUBJECT-{T1,T2,PD}.nii.gz`` (e.g. ``IXI002-Guys-0828-T1.nii.gz``; the subject id is the
part before the last ``-``). They are found anywhere under the source folder, so the flat layout, one folder per
modality (as the IXI tarballs unpack) and one folder per subject all work. Other IXI modalities (MRA, DTI) are
ignored. The sequences of a subject differ in shape and orientation, so the checks ask only that each is a
readable, finite, not all-zero 3D image; registration (SimpleITK, as the CodeBrain papers did) then puts T1 and PD
on the T2 grid. PD and T2 come from one dual-echo acquisition in IXI, so their registration is close to identity.
Subjects missing a sequence are bad cases (use ``skip_bad`` to convert the others). There are no labels.
"""
from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from codebrain_seg.case_checks import (
    CaseFiles,
    ConversionReport,
    convert_checked_cases,
    prepare_target,
)
from codebrain_seg.converters.brats import as_nii_gz
from codebrain_seg.errors import InputError, MissingFileError
from codebrain_seg.io import Volume, read_nifti
from codebrain_seg.raw_dataset import IXI_CHANNELS, RawDatasetWriter, make_dataset_json

logger = logging.getLogger(__name__)

_IXI_FILE = re.compile(r"^(?P<subject>.+)-(?P<seq>T1|T2|PD)\.nii(\.gz)?$", re.IGNORECASE)
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
# Random samples per resolution level: enough for a stable mutual information, far fewer than a full IXI volume.
_METRIC_SAMPLES = 100_000


def discover_ixi_cases(source: Path) -> tuple[list[CaseFiles], list[str]]:
    """IXI subjects under ``source`` (files grouped by subject id) with their problems, and warnings."""
    source = Path(source)
    if not source.is_dir():
        raise MissingFileError(f"IXI source folder {source} does not exist or is not a folder")
    files = sorted(p for p in source.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
    if not files:
        raise MissingFileError(f"IXI source folder {source} is empty")
    cases: dict[str, CaseFiles] = {}
    ignored = []
    for path in files:
        match = _IXI_FILE.match(path.name)
        if match is None:
            ignored.append(path.name)
            continue
        subject, sequence = match.group("subject"), match.group("seq").upper()
        case = cases.setdefault(subject, CaseFiles(case_id=subject, images={}))
        if sequence in case.images:
            case.problems.append(f"two {sequence} files: {case.images[sequence]} and {path}")
        else:
            case.images[sequence] = path
    if not cases:
        example = ignored[0] if ignored else "nothing"
        raise InputError(f"Unknown layout in {source}: no IXI files named SUBJECT-T1.nii.gz, SUBJECT-T2.nii.gz, "
                         f"SUBJECT-PD.nii.gz were found; first file found: {example}")
    for case in cases.values():
        case.problems[:0] = [f"missing {s}" for s in IXI_CHANNELS if s not in case.images]
        case.images = {s: case.images[s] for s in IXI_CHANNELS if s in case.images}
    warnings = []
    if ignored:
        kind = "image" if any(_NIFTI.search(n) for n in ignored) else "non-image"
        warnings.append(f"ignored {len(ignored)} {kind} file(s) that are not T1/T2/PD (e.g. {ignored[0]})")
    return [cases[s] for s in sorted(cases)], warnings


def _to_sitk(volume: Volume) -> sitk.Image:
    """SimpleITK image with the nibabel geometry (RAS affine -> ITK's LPS origin/direction/spacing)."""
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    linear = ras_to_lps @ volume.affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.data.transpose(2, 1, 0), dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in ras_to_lps @ volume.affine[:3, 3]])
    image.SetDirection([float(d) for d in (linear / spacing).ravel()])
    return image


def register_rigid(fixed: Volume, moving: Volume, iterations: int = 200, seed: int = 0) -> np.ndarray:
    """``moving`` rigidly registered to ``fixed`` and resampled (linear) onto its grid; array shaped like fixed.

    Euler3D transform initialised on the image centres, Mattes mutual information (works across contrasts),
    regular-step gradient descent, two resolution levels (shrink 2 with 1 mm smoothing, then full resolution).
    """
    fixed_image, moving_image = _to_sitk(fixed), _to_sitk(moving)
    initial = sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    shrink_factors = [2, 1]
    voxels = np.prod(fixed.data.shape)
    method.SetMetricSamplingPercentagePerLevel(
        [min(1.0, _METRIC_SAMPLES * f ** 3 / voxels) for f in shrink_factors], seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=iterations,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    # Rotations and translations on one scale: a step moves the image by about the same distance in mm.
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink_factors)
    method.SetSmoothingSigmasPerLevel([1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    transform = method.Execute(fixed_image, moving_image)
    logger.debug("registration stopped: %s; metric %.4f", method.GetOptimizerStopConditionDescription(),
                 method.GetMetricValue())
    resampled = sitk.Resample(moving_image, fixed_image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)


def _write_ixi_case(writer: RawDatasetWriter, case: CaseFiles) -> None:
    t2 = read_nifti(case.images["T2"])
    channels: list[Volume | Path] = []
    with tempfile.TemporaryDirectory(prefix="codebrain_ixi_") as scratch:
        for sequence in IXI_CHANNELS:
            if sequence == "T2":
                channels.append(as_nii_gz(case.images["T2"], Path(scratch)))  # the reference grid, kept as is
            else:
                moved = register_rigid(t2, read_nifti(case.images[sequence]))
                channels.append(Volume(data=moved, affine=t2.affine, header=t2.header))
        writer.write_case(case.case_id, channels)


def convert_ixi(source: Path, dataset_id: int, name: str = "IXI", skip_bad: bool = False,
                overwrite: bool = False) -> ConversionReport:
    """Convert IXI T1/T2/PD files under ``source`` into ``$codebrain_raw/DatasetXXX_Name`` (T1, PD on T2 grid).

    Args:
        source: folder holding the IXI NIfTI files (flat, per modality or per subject).
        dataset_id: nnU-Net dataset id (1..999).
        name: short dataset name.
        skip_bad: convert the good subjects when some fail the checks (default: write nothing and raise).
        overwrite: replace an existing dataset folder of the same name.

    Raises:
        CaseProblemsError: some subject failed the checks (all are listed) and ``skip_bad`` is False.
        FileNotFoundError / ValueError: the source is missing, empty, or holds no IXI files.
        FileExistsError: the output exists (without ``overwrite``) or the id is used by another dataset.
    """
    source = Path(source)
    target = prepare_target(dataset_id, name, overwrite)
    cases, warnings = discover_ixi_cases(source)

    def make_json(good: list[CaseFiles]) -> dict:
        return make_dataset_json(IXI_CHANNELS, len(good), name=name,
                                 description="Converted by codebrain_convert_ixi from IXI; T1 and PD rigidly "
                                             "registered (SimpleITK, mutual information) onto the T2 grid.")

    return convert_checked_cases(cases, target, _write_ixi_case, make_json, same_grid=False, skip_bad=skip_bad,
                                 overwrite=overwrite, warnings=warnings, layout="IXI (SUBJECT-{T1,T2,PD}.nii.gz)")
