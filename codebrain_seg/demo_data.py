"""Built-in BraTS-like demo data: a procedural brain-tumour phantom and the nnU-Net raw dataset made from it.

Every subject is a skull-stripped brain on a zero background (as BraTS ships them) drawn from a seeded
``numpy.random.Generator``: an ellipsoidal brain with random radii, rotation and smooth deformation; outer CSF,
sulci and the interhemispheric fissure; a cortical grey-matter ribbon; white matter; deep grey nuclei; two lateral
ventricles (and a third) with enhancing choroid plexus; and in one hemisphere a glioma with necrotic core (label 1),
enhancing rim (label 3) and vasogenic oedema spreading along white matter (label 2), pushing the tissue aside.

Images come from per-tissue T1, T2 and proton density (PD) through MR signal equations (Bernstein, King & Zhou,
*Handbook of MRI Pulse Sequences*, 2004; magnitude images, TE << TR):

* spin echo, used for T1w (TR 500, TE 15 ms) and T2w (TR 4000, TE 100 ms)::

      S = PD * (1 - exp(-TR/T1)) * exp(-TE/T2)

* inversion-recovery FLAIR (TI 2500, TR 9000, TE 120 ms; TI nulls T1 ~ 4000 ms, i.e. CSF)::

      S = PD * |1 - 2 exp(-TI/T1) + exp(-TR/T1)| * exp(-TE/T2)

* T1Gd: the T1w spin echo after gadolinium, relaxivities r1 = 4, r2 = 5 /s/mM (Rohrer et al., Invest Radiol
  40:715, 2005), concentration C where the blood-brain barrier leaks (enhancing rim, choroid plexus)::

      1/T1' = 1/T1 + r1 * C,    1/T2' = 1/T2 + r2 * C

* partial volume: a voxel's signal is the fraction-weighted sum of its tissues' signals;
* Rician noise (Gudbjartsson & Patz, MRM 34:910, 1995): M = |S * B + sigma * (n_re + i n_im)|, n ~ N(0, 1),
  with B a smooth multiplicative bias field shared in part by all sequences (the receive coil).

Relaxation values are literature-like for 1.5-3 T (Wansapura et al., JMRI 9:531, 1999; Stanisz et al., MRM 54:507,
2005), jittered per subject and textured per voxel. Each sequence is finally scaled to an integer range of a few
hundred to 1000 with a random per-subject gain, as BraTS intensities vary between scanners.

Anatomy is defined in millimetres and random fields are sums of random plane waves, so a seed gives the same
subject at any grid size; only the voxel noise depends on the grid.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from codebrain_seg.errors import ExistingFileError, InputError
from codebrain_seg.io import Volume
from codebrain_seg.paths import dataset_folder_name, parse_dataset_folder_name, raw_root
from codebrain_seg.raw_dataset import (
    BRATS_CHANNELS,
    BRATS_REGIONS,
    BRATS_REGIONS_CLASS_ORDER,
    RawDatasetWriter,
    list_cases,
    make_dataset_json,
)

logger = logging.getLogger(__name__)

# Small enough for the whole demo chain on a 2-core CPU, divisible by 8 for 3 encoder down-samplings.
DEFAULT_SHAPE = (64, 64, 40)
# Enough cases for 5-fold cross-validation with a few cases in each validation fold.
DEFAULT_NUM_CASES = 12
DEFAULT_NAME = "DemoBraTS"
# Field of view in mm (RAS: left-right, posterior-anterior, inferior-superior); spacing = FOV / shape, so a
# 192 x 192 x 160 grid is 1 mm isotropic and the default grid is 3 x 3 x 4 mm.
FIELD_OF_VIEW_MM = (192.0, 192.0, 160.0)
MIN_SIZE = 16  # voxels per axis; below this the cortex and tumour layers no longer resolve

TISSUE_NAMES = ("background", "CSF", "ventricle", "GM", "deep GM", "WM", "choroid plexus", "oedema", "necrosis",
                "enhancing tumour")
BACKGROUND, CSF, VENTRICLE, GM, DEEP_GM, WM, CHOROID, OEDEMA, NECROSIS, ENHANCING = range(len(TISSUE_NAMES))
# Tissue -> BraTS label (1 NCR, 2 ED, 3 ET); everything else is 0.
TISSUE_TO_LABEL = {NECROSIS: 1, OEDEMA: 2, ENHANCING: 3}

# (T1 ms, T2 ms, PD, gadolinium mM, texture: relative per-voxel fluctuation)
TISSUE_PROPERTIES: dict[int, tuple[float, float, float, float, float]] = {
    CSF: (4000.0, 2000.0, 1.00, 0.0, 0.01),
    VENTRICLE: (4000.0, 2000.0, 1.00, 0.0, 0.01),
    GM: (1300.0, 100.0, 0.80, 0.0, 0.03),
    DEEP_GM: (1100.0, 85.0, 0.76, 0.0, 0.03),
    WM: (800.0, 80.0, 0.70, 0.0, 0.03),
    CHOROID: (1300.0, 150.0, 0.85, 1.0, 0.05),  # vascular, no blood-brain barrier: enhances
    OEDEMA: (1400.0, 250.0, 0.88, 0.0, 0.06),  # vasogenic: extra water lengthens T1 and T2
    NECROSIS: (2800.0, 700.0, 0.95, 0.0, 0.08),  # liquefied: nearly fluid
    ENHANCING: (1200.0, 120.0, 0.85, 0.5, 0.08),  # concentration scaled per subject
}
# (TR, TE, TI or None, gadolinium given) in ms
PROTOCOLS: dict[str, tuple[float, float, float | None, bool]] = {
    "T1": (500.0, 15.0, None, False),
    "T1Gd": (500.0, 15.0, None, True),
    "T2": (4000.0, 100.0, None, False),
    "FLAIR": (9000.0, 120.0, 2500.0, False),
}
R1_PER_MS, R2_PER_MS = 4.0e-3, 5.0e-3  # relaxivities per mM, converted from /s to /ms
PARTIAL_VOLUME_SIGMA = 0.6  # voxels: the point-spread width that mixes tissues at their borders


@dataclass
class DemoCase:
    """One phantom subject: four sequences, BraTS labels and the tissue map they were made from."""

    images: dict[str, np.ndarray]  # channel -> (X, Y, Z) float32, integer-valued, 0 outside the brain
    label: np.ndarray  # (X, Y, Z) uint8: 0 background, 1 NCR, 2 ED, 3 ET
    tissue: np.ndarray  # (X, Y, Z) uint8 index into TISSUE_NAMES, before partial-volume mixing
    affine: np.ndarray  # (4, 4) voxel -> world, axial slices along the third axis
    parameters: dict[str, Any] = field(default_factory=dict)  # drawn subject parameters, for inspection

    @property
    def brain_mask(self) -> np.ndarray:
        """(X, Y, Z) bool: voxels inside the skull-stripped brain."""
        return self.tissue != BACKGROUND

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def volumes(self) -> list[Volume]:
        """The images as Volumes in BRATS_CHANNELS order, ready for RawDatasetWriter."""
        header = _nifti_header(self.affine)
        return [Volume(self.images[name], self.affine.copy(), header.copy()) for name in BRATS_CHANNELS]


def demo_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel -> world affine of a demo grid: FIELD_OF_VIEW_MM / shape spacing, BraTS axis flips, centred at 0."""
    spacing = np.asarray(FIELD_OF_VIEW_MM) / np.asarray(shape, dtype=float)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return affine


def make_demo_case(shape: tuple[int, int, int] = DEFAULT_SHAPE, seed: int = 0) -> DemoCase:
    """Generate one BraTS-like phantom subject, deterministically from ``seed``."""
    shape = _check_shape(shape)
    if int(seed) < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed}")
    # Anatomy and scanner draws come from one stream and voxel noise from another, so the subject does not
    # change with the grid size.
    anatomy_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))
    affine = demo_affine(shape)
    spacing = np.abs(np.diag(affine)[:3])
    coords, parameters = _subject_coordinates(anatomy_rng, _world_grid(shape, affine))
    tissue = _paint_tissues(anatomy_rng, coords, float(spacing.max()), parameters)
    images = _acquire(anatomy_rng, noise_rng, coords, tissue, parameters)
    label = np.zeros(shape, np.uint8)
    for tissue_class, value in TISSUE_TO_LABEL.items():
        label[tissue == tissue_class] = value
    return DemoCase(images=images, label=label, tissue=tissue, affine=affine, parameters=parameters)


def make_demo_dataset(dataset_id: int, num_cases: int = DEFAULT_NUM_CASES,
                      shape: tuple[int, int, int] = DEFAULT_SHAPE, seed: int = 0, name: str = DEFAULT_NAME,
                      overwrite: bool = False) -> Path:
    """Write ``num_cases`` phantom subjects (seeds ``seed + i``) as ``$codebrain_raw/DatasetXXX_Name``.

    Raises:
        EnvironmentError: the raw folder variable is unset.
        FileExistsError: the dataset exists (and ``overwrite`` is False) or its id is taken by another dataset.
        ValueError: bad id, name, case count, shape or seed.
    """
    folder_name = dataset_folder_name(dataset_id, name)
    if int(num_cases) < 1:
        raise InputError(f"num_cases must be at least 1, got {num_cases}")
    shape = _check_shape(shape)
    root = raw_root()
    _check_id_free(root, int(dataset_id), folder_name)
    writer = RawDatasetWriter(root / folder_name, overwrite=overwrite)
    case_ids = [f"{name}_{index:03d}" for index in range(int(num_cases))]
    # A demo case costs under a second, so every case is regenerated rather than resumed: leftovers of an
    # interrupted run may have been made with another shape or seed.
    _remove_other_cases(writer.staging_dir, set(case_ids))
    for index, case_id in enumerate(case_ids):
        case = make_demo_case(shape, seed + index)
        volumes = case.volumes()
        writer.write_case(case_id, volumes, label=case.label, label_reference=volumes[0])
        logger.info("demo case %s written (%d/%d)", case_id, index + 1, len(case_ids))
    description = (f"Procedural BraTS-like phantom from codebrain_seg.demo_data: {num_cases} subjects, "
                   f"grid {shape[0]}x{shape[1]}x{shape[2]}, seeds {seed}..{seed + num_cases - 1}")
    dataset_json = make_dataset_json(BRATS_CHANNELS, len(case_ids), labels=BRATS_REGIONS,
                                     regions_class_order=BRATS_REGIONS_CLASS_ORDER, name=name,
                                     description=description)
    return writer.finish(dataset_json)


# ----------------------------------------------------------------------------------------------------------------
# Geometry


def _check_shape(shape: Any) -> tuple[int, int, int]:
    values = tuple(int(s) for s in shape)
    if len(values) != 3 or min(values) < MIN_SIZE:
        raise InputError(f"shape must be three sizes of at least {MIN_SIZE} voxels, got {tuple(shape)}")
    return values  # type: ignore[return-value]


def _check_id_free(root: Path, dataset_id: int, folder_name: str) -> None:
    # nnU-Net resolves -d by id, so two folders with one id would make it ambiguous.
    if not root.is_dir():
        return
    for child in root.iterdir():
        parsed = parse_dataset_folder_name(child.name)
        if parsed and parsed[0] == dataset_id and child.name != folder_name:
            raise ExistingFileError(f"dataset id {dataset_id} is already used by {child}; choose another -d")


def _remove_other_cases(staging_dir: Path, keep: set[str]) -> None:
    stale = set(list_cases(staging_dir)) - keep
    for folder in ("imagesTr", "labelsTr"):
        for path in (staging_dir / folder).glob("*.nii.gz"):
            case_id = path.name[: -len(".nii.gz")]
            if folder == "imagesTr":
                case_id = case_id.rsplit("_", 1)[0]
            if case_id in stale:
                path.unlink()
    shutil.rmtree(staging_dir / ".done", ignore_errors=True)


def _nifti_header(affine: np.ndarray) -> nib.Nifti1Header:
    image = nib.Nifti1Image(np.zeros((1, 1, 1), np.float32), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    return image.header


def _world_grid(shape: tuple[int, int, int], affine: np.ndarray) -> list[np.ndarray]:
    index = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    return [sum(np.float32(affine[row, col]) * index[col] for col in range(3)) + np.float32(affine[row, 3])
            for row in range(3)]


def _random_field(rng: np.random.Generator, coords: list[np.ndarray], wavelengths: tuple[float, float],
                  n_waves: int) -> np.ndarray:
    """Smooth random field of unit variance: a sum of plane waves in mm, independent of the grid."""
    return _plane_waves(rng, coords, wavelengths, n_waves, with_gradient=False)[0]


def _plane_waves(rng: np.random.Generator, coords: list[np.ndarray], wavelengths: tuple[float, float],
                 n_waves: int, with_gradient: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Random field and, if asked, the norm of its gradient (per mm), computed exactly from the waves."""
    wave_vectors = rng.normal(size=(n_waves, 3))
    wave_vectors *= (2 * np.pi / rng.uniform(*wavelengths, size=n_waves)
                     / np.linalg.norm(wave_vectors, axis=1))[:, None]
    phases = rng.uniform(0, 2 * np.pi, size=n_waves)
    scale = np.float32(np.sqrt(2.0 / n_waves))  # a random-phase cosine has variance 1/2
    total = np.zeros(coords[0].shape, np.float32)
    gradient = [np.zeros_like(total) for _ in range(3)] if with_gradient else []
    for vector, phase in zip(wave_vectors.astype(np.float32), phases):
        argument = vector[0] * coords[0] + vector[1] * coords[1] + vector[2] * coords[2] + np.float32(phase)
        total += np.cos(argument)
        if with_gradient:
            sine = np.sin(argument)
            for axis in range(3):
                gradient[axis] -= vector[axis] * sine
    norm = np.sqrt(sum(g ** 2 for g in gradient)) * scale if with_gradient else None
    return total * scale, norm


def _rotation(rng: np.random.Generator) -> np.ndarray:
    # Head positioning varies most by yaw and pitch in the scanner.
    yaw, pitch, roll = np.deg2rad(rng.uniform(-8, 8)), np.deg2rad(rng.uniform(-6, 6)), np.deg2rad(rng.uniform(-4, 4))
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    ry = np.array([[np.cos(roll), 0, np.sin(roll)], [0, 1, 0], [-np.sin(roll), 0, np.cos(roll)]])
    return rz @ rx @ ry


def _subject_coordinates(rng: np.random.Generator, world: list[np.ndarray]) -> tuple[list[np.ndarray], dict]:
    """World mm -> the subject's own anatomical frame: rigid pose, then a smooth random deformation."""
    rotation = _rotation(rng)
    shift = rng.uniform([-3, -3, -4], [3, 3, 4])
    centred = [w - np.float32(s) for w, s in zip(world, shift)]
    coords = [sum(np.float32(rotation[row, col]) * centred[col] for col in range(3)) for row in range(3)]
    amplitude = rng.uniform(2.5, 4.0)
    displacement = [_random_field(rng, coords, (60.0, 160.0), 8) for _ in range(3)]
    coords = [c + np.float32(amplitude) * d for c, d in zip(coords, displacement)]
    return coords, {"rotation": rotation.round(4).tolist(), "shift_mm": shift.round(2).tolist(),
                    "deformation_mm": round(float(amplitude), 2)}


def _ellipsoid(coords: list[np.ndarray], centre: tuple[float, float, float],
               radii: tuple[float, float, float]) -> np.ndarray:
    return sum(((c - np.float32(m)) / np.float32(r)) ** 2 for c, m, r in zip(coords, centre, radii)) < 1


# ----------------------------------------------------------------------------------------------------------------
# Anatomy and tumour


def _paint_tissues(rng: np.random.Generator, coords: list[np.ndarray], max_spacing: float,
                   parameters: dict) -> np.ndarray:
    """Hard tissue map (uint8, TISSUE_NAMES), painted from outside in; the tumour is painted last."""
    radii = np.array([rng.uniform(62, 70), rng.uniform(76, 86), rng.uniform(54, 62)])
    inferior_flattening = rng.uniform(0.80, 0.90)  # temporal lobes and skull base make the bottom flatter
    atrophy = rng.uniform(0.0, 1.0)  # widens sulci, fissure and ventricles together, as ageing does
    side = int(rng.choice([-1, 1]))
    tumour = _draw_tumour(rng, radii, side, max_spacing)
    parameters.update(brain_radii_mm=radii.round(1).tolist(), atrophy=round(float(atrophy), 3),
                      tumour_side="right" if side > 0 else "left", **tumour)

    # Mass effect: tissue seen at p was at a point closer to the tumour centre (monotone for strength < 1).
    centre = tumour["tumour_centre_mm"]
    offsets = [c - np.float32(m) for c, m in zip(coords, centre)]
    distance = np.sqrt(sum(o ** 2 for o in offsets))
    width = tumour["enhancing_radius_mm"] + 0.5 * tumour["oedema_extent_mm"]
    squeeze = 1 - np.float32(tumour["mass_effect"]) * np.exp(-((distance / np.float32(width)) ** 2))
    anatomy = [np.float32(m) + o * squeeze for m, o in zip(centre, offsets)]
    x, y, z = anatomy

    # Brain outline: a wobbly ellipsoid; depth below its surface drives cortex and CSF.
    surface_wobble = _random_field(rng, anatomy, (60.0, 120.0), 8)
    c_axis = np.where(z < 0, np.float32(radii[2] * inferior_flattening), np.float32(radii[2]))
    # Frontal lobes are narrower than the parietal region: the left-right radius shrinks towards anterior.
    a_axis = np.float32(radii[0]) * (1 - np.float32(0.08) * y / np.float32(radii[1]))
    radius = np.sqrt((x / a_axis) ** 2 + (y / np.float32(radii[1])) ** 2 + (z / c_axis) ** 2)
    radius = radius * (1 - np.float32(0.015) * surface_wobble)
    brain = radius < 1
    norm = np.sqrt(x ** 2 + y ** 2 + z ** 2)
    depth = norm * (1 / np.maximum(radius, 1e-3) - 1)  # distance to the surface along the ray from the centre

    ventricle_scale = rng.uniform(0.75, 1.0) + 0.5 * atrophy
    vent_y, vent_z = rng.uniform(-5, 5), rng.uniform(6, 14)
    vent_r = (5.5 * ventricle_scale, 30 * (0.85 + 0.15 * ventricle_scale), 8 * ventricle_scale)
    vent_bend = rng.uniform(5, 10)  # horns dip at both ends, as the C-shaped ventricle does in a sagittal view

    # The interhemispheric fissure reaches down to the corpus callosum, and to the base in front of and behind it.
    csf_rim = 1.5 + 2.0 * atrophy
    fissure_half_width = 1.0 + 1.5 * atrophy
    fissure_region = (z > vent_z + vent_r[2] + 3) | (np.abs(y - vent_y) > 36)
    medial_depth = np.where(fissure_region, np.abs(x) - fissure_half_width + csf_rim, np.inf)
    depth = np.minimum(depth, medial_depth)

    # Sulci are the zero level set of a random field cut to the outer shell: sheets running inwards, each
    # filled with CSF and lined by cortex, with white-matter gyral cores between them.
    folds, folds_slope = _plane_waves(rng, anatomy, (20.0, 40.0), 32, with_gradient=True)
    sulcus_distance = np.abs(folds) / np.maximum(folds_slope, np.float32(1e-3))  # mm to the nearest sulcus
    sulcus_depth = 12 + 5 * _random_field(rng, anatomy, (40.0, 80.0), 8)
    sulcus_half_width = 0.5 + 1.0 * atrophy
    cortex = rng.uniform(2.5, 3.5)
    in_sulcus = depth < sulcus_depth
    csf = (depth < csf_rim) | (in_sulcus & (sulcus_distance < sulcus_half_width))
    grey = (depth < csf_rim + cortex) | ((depth < sulcus_depth + cortex)
                                        & (sulcus_distance < sulcus_half_width + cortex))

    tissue = np.zeros(x.shape, np.uint8)
    tissue[brain] = WM
    tissue[brain & grey] = GM
    tissue[brain & csf] = CSF

    deep_scale = rng.uniform(0.9, 1.1)
    lateral = np.abs(x)
    mirrored = [lateral, y, z]
    vent_x = 1.5 + vent_r[0]
    deep = (_ellipsoid(mirrored, (11, vent_y - 10, vent_z - 12), tuple(deep_scale * np.array([8, 14, 9])))
            | _ellipsoid(mirrored, (vent_x + vent_r[0] + 3, vent_y + 18, vent_z + 2), (5, 9, 8))
            | _ellipsoid(mirrored, (22, vent_y + 2, vent_z - 8), tuple(deep_scale * np.array([6, 14, 10]))))
    tissue[deep & brain & (tissue == WM)] = DEEP_GM

    along = (y - np.float32(vent_y)) / np.float32(vent_r[1])
    bent = [lateral, y, z + np.float32(vent_bend) * along ** 2]
    ventricles = _ellipsoid(bent, (vent_x, vent_y, vent_z), vent_r)
    third = (lateral < 1.2 * ventricle_scale) & (np.abs(y - (vent_y - 7)) < 11) & (np.abs(z - (vent_z - 14)) < 8)
    tissue[brain & (ventricles | third)] = VENTRICLE
    # Choroid plexus lies on the floor of the ventricular body and atrium.
    choroid = _ellipsoid(bent, (vent_x, vent_y - 0.5 * vent_r[1], vent_z - 0.5 * vent_r[2]), (2.5, 8.0, 2.5))
    tissue[brain & ventricles & choroid] = CHOROID
    parameters.update(ventricle_scale=round(float(ventricle_scale), 3))

    _paint_tumour(rng, tissue, coords, anatomy, tumour, side, max_spacing)
    tissue[~brain] = BACKGROUND
    return tissue


def _draw_tumour(rng: np.random.Generator, radii: np.ndarray, side: int, max_spacing: float) -> dict[str, Any]:
    """Tumour centre (well inside one hemisphere) and layer sizes in mm."""
    for _ in range(100):
        centre = np.array([side * rng.uniform(18, 42), rng.uniform(-0.6, 0.6) * radii[1],
                           rng.uniform(-0.3, 0.5) * radii[2]])
        if np.sum((centre / radii) ** 2) < 0.65 ** 2:
            break
    else:  # pragma: no cover - the box above is mostly inside the ellipse, so 100 draws always suffice
        centre = np.array([side * 25.0, 0.0, 10.0])
    # Layers must stay at least a voxel thick or a coarse grid would lose the rim or the core.
    enhancing_radius = rng.uniform(11, 24)
    rim = max(rng.uniform(3.5, 7.0), max_spacing)
    enhancing_radius = max(enhancing_radius, rim + max_spacing)
    return {"tumour_centre_mm": centre.round(2).tolist(), "enhancing_radius_mm": round(float(enhancing_radius), 2),
            "rim_mm": round(float(rim), 2), "oedema_extent_mm": round(float(rng.uniform(6, 22)), 2),
            "mass_effect": round(float(rng.uniform(0.15, 0.4) * min(enhancing_radius / 20, 1.0)), 3),
            "enhancement_mM": round(float(rng.uniform(0.35, 0.7)), 3)}


def _paint_tumour(rng: np.random.Generator, tissue: np.ndarray, coords: list[np.ndarray],
                  anatomy: list[np.ndarray], tumour: dict[str, Any], side: int, max_spacing: float) -> None:
    distance = np.sqrt(sum((c - np.float32(m)) ** 2 for c, m in zip(coords, tumour["tumour_centre_mm"])))
    outline = _random_field(rng, coords, (15.0, 40.0), 16)
    core_outline = _random_field(rng, coords, (10.0, 30.0), 16)
    fingers = _random_field(rng, coords, (12.0, 35.0), 16)  # oedema follows white-matter tracts irregularly
    rho = distance * (1 + np.float32(0.18) * outline)
    rho_oedema = distance * (1 + np.float32(0.3) * fingers)
    enhancing_radius, rim = tumour["enhancing_radius_mm"], tumour["rim_mm"]
    oedema_radius = enhancing_radius + tumour["oedema_extent_mm"]
    necrosis_radius = np.minimum((enhancing_radius - rim) * (1 + np.float32(0.15) * core_outline),
                                 enhancing_radius - max_spacing)
    # The falx stops the tumour at the (shifted) midline.
    hemisphere = side * anatomy[0] > 0.5
    inside = tissue != BACKGROUND
    oedema_prone = (tissue == WM) | (tissue == DEEP_GM) | ((tissue == GM) & (rho_oedema < 0.75 * oedema_radius))
    tissue[hemisphere & oedema_prone & (rho_oedema < oedema_radius)] = OEDEMA
    tissue[hemisphere & inside & (rho < enhancing_radius)] = ENHANCING
    tissue[hemisphere & inside & (rho < necrosis_radius)] = NECROSIS


# ----------------------------------------------------------------------------------------------------------------
# Acquisition


def _signal(protocol: tuple[float, float, float | None, bool], t1: np.ndarray, t2: np.ndarray,
            pd: np.ndarray) -> np.ndarray:
    """Spin-echo or inversion-recovery magnitude signal (equations in the module docstring)."""
    tr, te, ti, _ = protocol
    if ti is None:
        return pd * (1 - np.exp(-tr / t1)) * np.exp(-te / t2)
    return pd * np.abs(1 - 2 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def _texture(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 1.0)
    return noise / noise.std()


def _acquire(anatomy_rng: np.random.Generator, noise_rng: np.random.Generator, coords: list[np.ndarray],
             tissue: np.ndarray, parameters: dict) -> dict[str, np.ndarray]:
    """The four sequences: partial-volume mix of tissue signals, bias field, Rician noise, integer scaling."""
    shape = tissue.shape
    # Per-subject relaxation jitter (scanner, field strength, age) and per-sequence scanner settings.
    jitter = {k: (np.exp(anatomy_rng.normal(0, 0.04)), np.exp(anatomy_rng.normal(0, 0.04)),
                  1 + anatomy_rng.normal(0, 0.02)) for k in TISSUE_PROPERTIES}
    coil_amplitude = anatomy_rng.uniform(0.05, 0.15)
    coil = _random_field(anatomy_rng, coords, (150.0, 400.0), 6)
    scanner = {name: (_random_field(anatomy_rng, coords, (120.0, 300.0), 4), anatomy_rng.uniform(18, 35),
                      anatomy_rng.uniform(400, 1000)) for name in BRATS_CHANNELS}
    texture = [_texture(noise_rng, shape) for _ in range(3)]  # T1, T2, PD microstructure, shared by sequences

    fractions = {k: ndimage.gaussian_filter((tissue == k).astype(np.float32), PARTIAL_VOLUME_SIGMA, mode="nearest")
                 for k in TISSUE_PROPERTIES}
    clean = {name: np.zeros(shape, np.float32) for name in BRATS_CHANNELS}
    for k, (t1, t2, pd, gadolinium, fluctuation) in TISSUE_PROPERTIES.items():
        where = fractions[k] > 1e-4
        if not where.any():
            continue
        j1, j2, jpd = jitter[k]
        t1_voxel = t1 * j1 * np.exp(fluctuation * texture[0][where])
        t2_voxel = t2 * j2 * np.exp(fluctuation * texture[1][where])
        pd_voxel = pd * jpd * (1 + 0.5 * fluctuation * texture[2][where])
        if k == ENHANCING:
            gadolinium = parameters["enhancement_mM"]
        for name, protocol in PROTOCOLS.items():
            t1_seq, t2_seq = t1_voxel, t2_voxel
            if protocol[3] and gadolinium > 0:
                t1_seq = 1 / (1 / t1_voxel + R1_PER_MS * gadolinium)
                t2_seq = 1 / (1 / t2_voxel + R2_PER_MS * gadolinium)
            clean[name][where] += fractions[k][where] * _signal(protocol, t1_seq, t2_seq, pd_voxel)

    brain = tissue != BACKGROUND
    t1_wm, t2_wm, pd_wm = TISSUE_PROPERTIES[WM][:3]
    images: dict[str, np.ndarray] = {}
    for name in BRATS_CHANNELS:
        own_field, snr, target = scanner[name]
        bias = np.exp(np.float32(coil_amplitude) * coil + np.float32(0.04) * own_field)
        sigma = float(_signal(PROTOCOLS[name], np.float64(t1_wm), np.float64(t2_wm), np.float64(pd_wm))) / snr
        real = clean[name] * bias + np.float32(sigma) * noise_rng.standard_normal(shape, dtype=np.float32)
        imaginary = np.float32(sigma) * noise_rng.standard_normal(shape, dtype=np.float32)
        magnitude = np.sqrt(real ** 2 + imaginary ** 2)
        gain = target / np.percentile(magnitude[brain], 99.5)
        images[name] = np.where(brain, np.maximum(np.rint(magnitude * gain), 1), 0).astype(np.float32)
    parameters.update(coil_bias=round(float(coil_amplitude), 3),
                      snr={name: round(float(scanner[name][1]), 1) for name in BRATS_CHANNELS})
    return images
