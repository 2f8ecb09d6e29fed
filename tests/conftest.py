"""Shared fixtures: project folders in a temp dir, and the real BraTS cases when they are present.

The real-data acceptance tests (imputation harness, confidence, segmentation) share one session-scoped project:
all real cases converted once (dataset ``REAL_DATASET``), the CPU configuration ``2d_cpu`` planned and
preprocessed once (fold 0: 12 training / 3 held-back cases), one CodeBrain model trained once on fold 0's
training cases and one nnU-Net segmenter (``nnUNetTrainerShort``) trained once on the same cases. Everything is
made on first use, so a run that selects none of these tests pays nothing, and every test skips cleanly when the
real data folder is absent.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI and developers keep the shared data beside the clone; a user's machine may not have it.
REAL_DATA_DIR = Path(os.environ.get("CODEBRAIN_REAL_DATA", REPO_ROOT.parent / "shared" / "data" / "real"))

REAL_DATASET = 974
REAL_DATASET_NAME = f"Dataset{REAL_DATASET}_RealBraTS"
REAL_CONFIGURATION = "2d_cpu"
# CodeBrain iterations per stage (batch 4 / 8 of 152 x 184 slices): far below the plans' 1200, enough for the
# acceptance margins (CodeBrain > zero-fill by > 3 dB on every pattern, confidence vs error rank correlation).
REAL_ITERATIONS = {1: 30, 2: 30}
# The segmenter: nnU-Net 3d_fullres planned for a 0.5 GB memory target (48 x 64 x 48 patches, batch 2), trained by
# the project's short trainer with its epochs cut to REAL_SEGMENTER_EPOCHS (x 20 iterations; poly schedule over
# them): enough for the ordering full > zero-fill.
REAL_SEGMENTER = "nnUNetTrainerShort"
REAL_SEGMENTER_MEMORY_GB = 0.5
REAL_SEGMENTER_EPOCHS = 2


def real_data_available() -> bool:
    """True when the real BraTS folder exists and holds something."""
    return REAL_DATA_DIR.is_dir() and any(REAL_DATA_DIR.iterdir())


def skip_without_real_data() -> None:
    """Skip the calling test or fixture when the real data folder is absent."""
    if not real_data_available():
        pytest.skip(f"real data folder {REAL_DATA_DIR} is absent")


def use_project_folders(root: Path, patch: pytest.MonkeyPatch) -> None:
    """Point the ``codebrain_*`` variables at ``root/{raw,preprocessed,results}`` (made if needed); no nnU-Net ones."""
    for kind in ("raw", "preprocessed", "results"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        patch.setenv(f"codebrain_{kind}", str(root / kind))
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        patch.delenv(variable, raising=False)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, restoring the previous number afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def idle_cores(seconds: float = 1.0) -> float:
    """Cores left idle by the other processes of the machine over ``seconds`` (from /proc/stat; 1 elsewhere)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            values = [int(v) for v in handle.readline().split()[1:9]]
        return values[3] + values[4], sum(values)

    try:
        idle_before, total_before = sample()
        time.sleep(seconds)
        idle_after, total_after = sample()
    except (OSError, ValueError, IndexError):
        return 1.0
    return (idle_after - idle_before) / max(total_after - total_before, 1) * (os.cpu_count() or 1)


def free_threads() -> int:
    """Torch threads for the real-data trainings and tests: 2 on an otherwise idle machine with 2+ cores, else 1.

    On a busy machine a second OpenMP thread waits for a core at every parallel region: measured 5-10x slower
    than one thread while another 2-thread job ran. ``CODEBRAIN_TEST_THREADS`` overrides the choice.
    """
    if os.environ.get("CODEBRAIN_TEST_THREADS"):
        return max(1, int(os.environ["CODEBRAIN_TEST_THREADS"]))
    return 2 if (os.cpu_count() or 1) >= 2 and idle_cores() >= 1.6 else 1


# ---- tiny demo projects (trainer, ablation and variant tests) ---------------------------------------------

TINY_DEMO_CONFIGURATION = "2d_tiny"


def build_tiny_demo(root: Path, dataset_id: int, network: dict[str, int], **configuration: object
                    ) -> SimpleNamespace:
    """Demo dataset (5 phantom cases of 48 x 48 x 24) made, planned (``2d_cpu``) and preprocessed under ``root``,
    with a ``2d_tiny`` configuration added to the plans: ``2d_cpu`` with ``network`` widths and the
    ``configuration`` keys overridden.

    Returns:
        ``root`` (with ``raw``, ``preprocessed``, ``results``), ``preprocessed`` folder, ``plans``, ``config`` (the
        tiny configuration), ``data`` (its preprocessed arrays), ``split`` (fold 0), ``planned`` (``2d_cpu``).
    """
    import json

    from codebrain_seg.demo_data import make_demo_dataset
    from codebrain_seg.io import read_json, write_json
    from planners.plan_and_preprocess import plan_and_preprocess

    with pytest.MonkeyPatch.context() as patch:
        use_project_folders(root, patch)
        make_demo_dataset(dataset_id, num_cases=5, shape=(48, 48, 24), seed=0)
        preprocessed = plan_and_preprocess(dataset_id, ["2d_cpu"])
    plans = read_json(preprocessed / "codebrainPlans.json")
    planned = json.loads(json.dumps(plans["configurations"]["2d_cpu"]))
    tiny = json.loads(json.dumps(planned))
    tiny.update(network=dict(network), **configuration)
    plans["configurations"][TINY_DEMO_CONFIGURATION] = tiny
    write_json(preprocessed / "codebrainPlans.json", plans)
    return SimpleNamespace(root=root, preprocessed=preprocessed, plans=plans, config=tiny, planned=planned,
                           data=preprocessed / tiny["data_identifier"],
                           split=read_json(preprocessed / "splits_final.json")[0])


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory):
    """Factory ``tiny_demo(dataset_id, network, **configuration)`` of :func:`build_tiny_demo` projects, each built
    once per session (same arguments, same project)."""
    built: dict[str, SimpleNamespace] = {}

    def make(dataset_id: int, network: dict[str, int], **configuration: object) -> SimpleNamespace:
        key = repr((dataset_id, sorted(network.items()), sorted(configuration.items())))
        if key not in built:
            built[key] = build_tiny_demo(tmp_path_factory.mktemp(f"demo{dataset_id}"), dataset_id, network,
                                         **configuration)
        return built[key]

    return make


@pytest.fixture
def real_data_dir() -> Path:
    """Folder of real BraTS 2018 cases (CASE/CASE_{t1,t1ce,t2,flair,seg}.nii.gz); skips when absent."""
    skip_without_real_data()
    return REAL_DATA_DIR


@pytest.fixture
def project_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Fresh raw / preprocessed / results folders, exported as the codebrain_* variables."""
    dirs = {kind: tmp_path / kind for kind in ("raw", "preprocessed", "results")}
    for kind, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(f"codebrain_{kind}", str(path))
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(variable, raising=False)
    return dirs


@pytest.fixture
def one_thread():
    """One torch thread: timings hold on a busy 2-core machine (restored afterwards)."""
    with torch_threads(1):
        yield


# ---- the session's real-data project ---------------------------------------------------------------------


def _report(message: str) -> None:
    """A progress line on the terminal even under output capture (session fixtures take minutes)."""
    import sys

    sys.__stderr__.write(f"\n[real data] {message}\n")
    sys.__stderr__.flush()


@pytest.fixture(scope="session")
def real_project_cache(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """All real cases converted (``REAL_DATASET``) and ``2d_cpu`` planned and preprocessed, once per session."""
    skip_without_real_data()
    from codebrain_seg.converters.brats import convert_brats
    from codebrain_seg.io import read_json
    from planners.plan_and_preprocess import plan_and_preprocess

    root = tmp_path_factory.getbasetemp() / "real_project"
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:
        use_project_folders(root, patch)
        source = root / "source"  # the case folders only (the data folder also holds a SOURCES.md)
        source.mkdir(exist_ok=True)
        for case in sorted(p for p in REAL_DATA_DIR.iterdir() if p.is_dir()):
            if not (source / case.name).exists():
                (source / case.name).symlink_to(case)
        raw = convert_brats(source, REAL_DATASET, name="RealBraTS").dataset_dir
        preprocessed = plan_and_preprocess(REAL_DATASET, [REAL_CONFIGURATION], num_processes=2)
    split = read_json(preprocessed / "splits_final.json")[0]
    _report(f"{len(split['train']) + len(split['val'])} cases converted, planned and preprocessed in "
            f"{time.monotonic() - start:.0f} s")
    return SimpleNamespace(root=root, raw=raw, preprocessed=preprocessed, split=split)


@pytest.fixture(scope="session")
def real_model_cache(real_project_cache: SimpleNamespace) -> SimpleNamespace:
    """CodeBrain (``2d_cpu``, Stage I and II, ``REAL_ITERATIONS`` each) trained once on fold 0's training cases."""
    from codebrain_seg.run.training import run_training

    project = real_project_cache
    fold_dir = (project.root / "results" / REAL_DATASET_NAME / f"CodeBrain__codebrainPlans__{REAL_CONFIGURATION}"
                / "fold_0")
    threads = free_threads()
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as patch, torch_threads(threads):
        use_project_folders(project.root, patch)
        for stage, iterations in REAL_ITERATIONS.items():
            # Validation at the end only, on 2 slices per held-back case (the tests score the model themselves).
            run_training(REAL_DATASET, 0, REAL_CONFIGURATION, stage=stage, iterations=iterations, device="cpu",
                         num_threads=threads, val_every=iterations, max_val_slices_per_case=2)
    _report(f"CodeBrain trained ({REAL_ITERATIONS[1]} + {REAL_ITERATIONS[2]} iterations, {threads} thread(s)) in "
            f"{time.monotonic() - start:.0f} s")
    return SimpleNamespace(root=project.root, raw=project.raw, split=project.split, fold_dir=fold_dir)


@pytest.fixture(scope="session")
def real_segmenter_cache(real_project_cache: SimpleNamespace) -> SimpleNamespace:
    """The nnU-Net segmenter trained once on fold 0's training cases by ``nnUNetTrainerShort``
    (``REAL_SEGMENTER_EPOCHS`` epochs); nnU-Net's tree lives in the project's results folder."""
    from evaluation.segmentation import nnunet_bridge as bridge
    from evaluation.segmentation.short_trainer import nnUNetTrainerShort

    project = real_project_cache
    threads = free_threads()
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as patch, torch_threads(threads):
        use_project_folders(project.root, patch)
        patch.setattr(nnUNetTrainerShort, "EPOCHS", REAL_SEGMENTER_EPOCHS)
        model = bridge.prepare_trained_segmenter(project.raw, project.split["train"], 0, REAL_SEGMENTER,
                                                 gpu_memory_gb=REAL_SEGMENTER_MEMORY_GB, num_processes=2)
    _report(f"segmenter exported, planned and trained ({REAL_SEGMENTER}, {REAL_SEGMENTER_EPOCHS} epochs, "
            f"{threads} thread(s)) in {time.monotonic() - start:.0f} s")
    return SimpleNamespace(root=project.root, raw=project.raw, split=project.split, model=model)


def write_slab(raw: Path, case_id: str, folder: Path, thickness: int) -> tuple[int, int]:
    """Write a labelled case restricted to ``thickness`` axial slices around its tumour to ``folder``
    (``imagesTs/CASE_XXXX.nii.gz``, ``labelsTs/CASE.nii.gz``, nnU-Net raw layout); returns the slice range.

    The window is centred on the tumour's centroid along the voxel axis closest to the superior direction and
    kept inside the volume; the affine is shifted so that the slab keeps its place in the world.
    """
    import nibabel as nib
    import numpy as np

    from codebrain_seg.raw_dataset import image_path

    label_image = nib.load(str(raw / "labelsTr" / f"{case_id}.nii.gz"))
    label = np.asarray(label_image.dataobj)
    axis = int(np.flatnonzero(nib.orientations.io_orientation(label_image.affine)[:, 0] == 2)[0])
    size = label.shape[axis]
    thickness = min(thickness, size)
    centre = float(np.nonzero(label)[axis].mean()) if label.any() else size / 2
    start = int(np.clip(round(centre - thickness / 2), 0, size - thickness))
    window = [slice(None)] * 3
    window[axis] = slice(start, start + thickness)
    shift = np.zeros(3)
    shift[axis] = start

    def save(image: nib.Nifti1Image, target: Path) -> None:
        affine = image.affine.copy()
        affine[:3, 3] += affine[:3, :3] @ shift
        data = np.asarray(image.dataobj)[tuple(window)]
        header = image.header.copy()
        header.set_data_dtype(data.dtype)
        target.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine, header), str(target))

    for channel in range(4):
        source = image_path(raw, case_id, channel)
        save(nib.load(str(source)), folder / "imagesTs" / source.name)
    save(label_image, folder / "labelsTs" / f"{case_id}.nii.gz")
    return start, start + thickness


# The held-back cases' slabs: 48 axial slices (one nnU-Net patch deep) around each tumour.
SLAB_THICKNESS = 48


@pytest.fixture(scope="session")
def real_held_back_slabs(real_project_cache: SimpleNamespace) -> SimpleNamespace:
    """fold 0's held-back cases, each restricted to ``SLAB_THICKNESS`` slices around its tumour, as a labelled
    cases folder (``imagesTs/``, ``labelsTs/``): the whole-volume evaluations (segmentation, volume protocol,
    confidence) run on these to fit the CI time."""
    project = real_project_cache
    folder = project.root / "held_back_slabs"
    ranges = {case_id: write_slab(project.raw, case_id, folder, SLAB_THICKNESS)
              for case_id in sorted(project.split["val"])}
    return SimpleNamespace(folder=folder, images=folder / "imagesTs", labels=folder / "labelsTs", ranges=ranges,
                           case_ids=sorted(ranges))


@pytest.fixture
def real_model(real_model_cache: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    """The real-data CodeBrain model with the project variables pointing at its folders (``free_threads()``
    torch threads during the test)."""
    use_project_folders(real_model_cache.root, monkeypatch)
    with torch_threads(free_threads()):
        yield real_model_cache


@pytest.fixture
def real_segmenter(real_segmenter_cache: SimpleNamespace, real_model: SimpleNamespace) -> SimpleNamespace:
    """The real-data segmenter beside the CodeBrain model (same project folders and threads)."""
    return SimpleNamespace(**vars(real_model), model=real_segmenter_cache.model)
