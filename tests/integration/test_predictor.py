"""Predictor and codebrain_impute: preprocessing as in training, geometry, confidence, bad inputs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REAL_CONFIGURATION, REAL_DATASET, use_project_folders

from codebrain_seg.cli.impute import main as impute_main
from codebrain_seg.demo_data import make_demo_dataset
from codebrain_seg.inference.codebrain import CodeBrainPredictor
from codebrain_seg.inference.request import ImputationContext
from codebrain_seg.io import read_json, read_nifti, write_json
from codebrain_seg.networks import CodeBrainConfig, PriorEncoder, StageOneModel
from codebrain_seg.raw_dataset import image_path, list_cases
from codebrain_seg.run.imputation import impute_folder
from codebrain_seg.run.methods import get_imputer
from planners.plan_and_preprocess import plan_and_preprocess
from planners.preprocessing import restore_to_original
from planners.slice_preprocessing import (
    prepare_case,
    to_preprocessed_space,
)

TINY_NETWORK = {"posterior_width": 8, "common_width": 8, "decoder_width": 8, "depth": 1}
TINY_CONFIG = "2d_tiny"
TINY_DATASET = 973


def _add_configuration(preprocessed: Path, name: str, base: str, **changes) -> dict:
    plans = read_json(preprocessed / "codebrainPlans.json")
    plans["configurations"][name] = {**json.loads(json.dumps(plans["configurations"][base])), **changes}
    write_json(preprocessed / "codebrainPlans.json", plans)
    return plans


def train_tiny_model(root: Path) -> SimpleNamespace:
    """Demo data (6 cases of 48 x 48 x 24) and a tiny CodeBrain trained briefly on fold 0 (cached in ``root``)."""
    from codebrain_seg.run.training import run_training

    with pytest.MonkeyPatch.context() as patch:
        use_project_folders(root, patch)
        model = f"CodeBrain__codebrainPlans__{TINY_CONFIG}"
        fold_dir = root / "results" / f"Dataset{TINY_DATASET}_DemoBraTS" / model / "fold_0"
        if not (fold_dir / "stage2" / "checkpoint_final.pth").is_file():
            make_demo_dataset(TINY_DATASET, num_cases=6, shape=(48, 48, 24))
            preprocessed = plan_and_preprocess(TINY_DATASET, ["2d_cpu"])
            _add_configuration(preprocessed, TINY_CONFIG, "2d_cpu", network=dict(TINY_NETWORK))
            run_training(TINY_DATASET, 0, TINY_CONFIG, iterations=40, device="cpu", num_threads=1, val_every=40,
                         max_val_slices_per_case=4)
    raw = root / "raw" / f"Dataset{TINY_DATASET}_DemoBraTS"
    return SimpleNamespace(root=root, raw=raw, fold_dir=fold_dir, split=read_json(
        root / "preprocessed" / raw.name / "splits_final.json")[0])


@pytest.fixture(scope="session")
def tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The tiny trained model, trained once per session."""
    return train_tiny_model(tmp_path_factory.getbasetemp() / "tiny_codebrain")


@pytest.fixture
def tiny_model(tiny_model_cache: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, one_thread) -> SimpleNamespace:
    """The tiny trained model with the project variables pointing at its folders."""
    use_project_folders(tiny_model_cache.root, monkeypatch)
    return tiny_model_cache


@pytest.fixture
def demo_dataset(project_dirs):
    """A 4-case demo dataset, planned and preprocessed; returns (raw folder, preprocessed folder, plans)."""
    raw = make_demo_dataset(991, num_cases=4, shape=(48, 48, 32))
    out = plan_and_preprocess(991, ["2d"])
    return raw, out, read_json(out / "codebrainPlans.json")


def _case(raw: Path, case_id: str) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header]:
    volumes = [read_nifti(image_path(raw, case_id, c)) for c in range(4)]
    return np.stack([v.data for v in volumes]), volumes[0].affine, volumes[0].header


def _tiny_predictor(plans: dict, configuration: str = "2d", seed: int = 0) -> CodeBrainPredictor:
    torch.manual_seed(seed)
    levels = plans["configurations"][configuration]["fsq_levels"]
    config = CodeBrainConfig(in_channels=len(plans["channel_names"]), fsq_levels=levels, **TINY_NETWORK)
    return CodeBrainPredictor(StageOneModel(config), PriorEncoder(config), plans, configuration, batch_size=5,
                              model_info={"untrained": True})


def test_prepare_case_matches_training_preprocessing(demo_dataset):
    raw, out, plans = demo_dataset
    configuration = plans["configurations"]["2d"]
    for case_id in list_cases(raw)[:2]:
        images, affine, _ = _case(raw, case_id)
        stack, brain, properties = prepare_case(images, [True] * 4, affine, plans, configuration)
        np.testing.assert_array_equal(stack, np.load(out / "codebrainPlans_2d" / f"{case_id}.npy"))
        saved = read_json(out / "codebrainPlans_2d" / f"{case_id}.json")
        for key in ("slice_range", "crop_start", "crop_size", "axis_order", "canonical_shape"):
            assert properties[key] == saved[key], key
        np.testing.assert_allclose(properties["normalization_upper"], saved["normalization_upper"], rtol=1e-6)
        assert brain.shape == stack.shape[1:] and (stack.any(axis=0) <= brain).all()
        # forward re-indexing of the original images, normalised, gives the same stack
        upper = np.array(properties["normalization_upper"], dtype=np.float32)[:, None, None, None]
        reindexed = to_preprocessed_space(images, properties)
        np.testing.assert_allclose(np.where(brain, np.clip(reindexed / upper, 0, 1), 0), stack, atol=1e-6)
        back = restore_to_original(to_preprocessed_space(images, properties), properties, denormalise=False)
        np.testing.assert_array_equal(back, images)  # the crop holds the whole brain


def test_prepare_case_missing_channels_and_errors(demo_dataset):
    raw, _, plans = demo_dataset
    images, affine, _ = _case(raw, list_cases(raw)[0])
    stack, _, properties = prepare_case(images, [False, True, False, True], affine, plans,
                                        plans["configurations"]["2d"])
    assert not stack[[0, 2]].any() and stack[[1, 3]].max() == 1.0
    assert properties["normalization_upper"][0] == 0.0 and properties["normalization_upper"][1] > 0
    with pytest.raises(ValueError, match="zero everywhere"):
        prepare_case(np.zeros_like(images), [True] * 4, affine, plans, plans["configurations"]["2d"])


def test_prepare_case_enlarges_the_crop_for_a_larger_brain(demo_dataset):
    raw, _, plans = demo_dataset
    images, affine, _ = _case(raw, list_cases(raw)[0])
    configuration = dict(plans["configurations"]["2d"], crop_size=[16, 16])
    stack, _, properties = prepare_case(images, [True] * 4, affine, plans, configuration)
    assert all(size % 8 == 0 and size > 16 for size in properties["crop_size"])
    assert stack.shape[2:] == tuple(properties["crop_size"])


def test_untrained_predictor_geometry_and_scale(demo_dataset, one_thread):
    raw, _, plans = demo_dataset
    images, affine, _ = _case(raw, list_cases(raw)[0])
    predictor = _tiny_predictor(plans)
    available = [True, False, True, False]
    output, confidence = predictor.impute_with_confidence(images, available, affine)
    assert output.shape == images.shape and output.dtype == np.float32
    np.testing.assert_array_equal(output[[0, 2]], images[[0, 2]])
    brain = (images[[0, 2]] != 0).any(axis=0)
    assert not output[[1, 3]][:, ~brain].any() and not confidence[~brain].any()
    upper = predictor.reference_upper
    assert output[1].min() >= 0 and output[1].max() <= upper[1] + 1e-3
    assert 0 <= confidence.min() and confidence.max() <= 1 and confidence[brain].mean() > 0
    # the same case stored in another voxel order gives the same imputation on its own grid
    flipped = images[:, ::-1, :, ::-1].copy()
    flip = np.diag([-1.0, 1.0, -1.0, 1.0])
    flip[:3, 3] = [images.shape[1] - 1, 0, images.shape[3] - 1]
    again = predictor.impute_arrays(flipped, available, affine @ flip)
    np.testing.assert_allclose(again[:, ::-1, :, ::-1], output, atol=1e-4)
    # batch size does not change the result
    predictor.batch_size = 1
    np.testing.assert_allclose(predictor.impute_arrays(images, available, affine), output, atol=1e-4)


# ---- codebrain_impute on a real case ----------------------------------------------------------------------


@pytest.fixture
def real_dataset(real_project_cache, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The raw folder of the session's converted real cases, with the project variables pointing at them."""
    use_project_folders(real_project_cache.root, monkeypatch)
    return real_project_cache.raw


def _copy_case(raw: Path, case_id: str, folder: Path, drop: tuple[int, ...] = (), zero: tuple[int, ...] = ()) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for channel in range(4):
        if channel in drop:
            continue
        source = image_path(raw, case_id, channel)
        target = folder / source.name
        if channel in zero:
            image = nib.load(str(source))
            nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine, image.header), str(target))
        else:
            target.write_bytes(source.read_bytes())


def test_impute_real_case_writes_only_the_missing_sequence(real_dataset, tmp_path):
    case_id = list_cases(real_dataset)[0]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _copy_case(real_dataset, case_id, inputs, drop=(2,))
    written = impute_folder(REAL_DATASET, 0, inputs, outputs, configuration=REAL_CONFIGURATION, method="mean")
    assert sorted(p.name for p in outputs.iterdir()) == [f"{case_id}_0002.nii.gz", f"{case_id}_imputation.json"]
    assert len(written) == 2
    given = nib.load(str(inputs / f"{case_id}_0000.nii.gz"))
    imputed = nib.load(str(outputs / f"{case_id}_0002.nii.gz"))
    assert imputed.shape == given.shape
    np.testing.assert_array_equal(imputed.affine, given.affine)
    np.testing.assert_array_equal(imputed.header.get_zooms(), given.header.get_zooms())
    data = np.asarray(imputed.dataobj)
    assert data.dtype == np.float32 and data.any()
    sidecar = json.loads((outputs / f"{case_id}_imputation.json").read_text())
    assert sidecar["imputed"] == {"T2": f"{case_id}_0002.nii.gz"}
    assert sidecar["imputed_from"] == ["T1", "T1Gd", "FLAIR"]
    assert sidecar["missing_because"] == {"T2": "absent file"} and sidecar["method"] == "mean"
    assert "intensity_scale" in sidecar and sidecar["reference_upper"]["T2"] > 0


def test_all_zero_sequence_counts_as_missing_and_given_files_are_never_rewritten(real_dataset, tmp_path):
    case_id = list_cases(real_dataset)[0]
    folder = tmp_path / "in"
    _copy_case(real_dataset, case_id, folder, zero=(0,))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert impute_main(["-d", str(REAL_DATASET), "-f", "0", "-c", REAL_CONFIGURATION, "-i", str(folder),
                        "-o", str(folder), "--method", "mean"]) == 0
    for name in (f"{case_id}_0001.nii.gz", f"{case_id}_0002.nii.gz", f"{case_id}_0003.nii.gz"):
        assert (folder / name).read_bytes() == before[name]
    assert np.asarray(nib.load(str(folder / f"{case_id}_0000.nii.gz")).dataobj).any()
    sidecar = json.loads((folder / f"{case_id}_imputation.json").read_text())
    assert sidecar["missing_because"] == {"T1": "all-zero volume"}


@pytest.mark.parametrize("problem", ["all_missing", "different_grids", "unknown_channel"])
def test_bad_inputs_are_reported_and_nothing_is_written(real_dataset, tmp_path, capsys, problem):
    cases = list_cases(real_dataset)
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _copy_case(real_dataset, cases[1], inputs, drop=(1,))  # a good case: still nothing may be written
    if problem == "all_missing":
        _copy_case(real_dataset, cases[0], inputs, drop=(0, 1), zero=(2, 3))
        expected = "every sequence is missing"
    elif problem == "different_grids":
        _copy_case(real_dataset, cases[0], inputs, drop=(3,))
        image = nib.load(str(inputs / f"{cases[0]}_0002.nii.gz"))
        cropped = np.asarray(image.dataobj)[:-4]
        nib.save(nib.Nifti1Image(cropped, image.affine, image.header), str(inputs / f"{cases[0]}_0002.nii.gz"))
        expected = "has shape"  # the shared rule of codebrain_seg.case_checks
    else:
        _copy_case(real_dataset, cases[0], inputs, drop=(3,))
        (inputs / f"{cases[0]}_0007.nii.gz").write_bytes((inputs / f"{cases[0]}_0000.nii.gz").read_bytes())
        expected = "channel 0007 is not known"
    code = impute_main(["-d", str(REAL_DATASET), "-f", "0", "-c", REAL_CONFIGURATION, "-i", str(inputs),
                        "-o", str(outputs), "--method", "mean"])
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not outputs.exists()


def test_baseline_registry_through_context(demo_dataset):
    raw, _, plans = demo_dataset
    images, _, _ = _case(raw, list_cases(raw)[0])
    imputer = get_imputer("mean", ImputationContext(plans=plans))
    output = imputer.impute(images * np.array([1, 0, 1, 1])[:, None, None, None], [True, False, True, True])
    assert output[1].any()


# ---- a trained model (tiny, demo data) ---------------------------------------------------------------------


def test_codebrain_impute_with_trained_model_and_confidence(tiny_model, tmp_path):
    case_id = tiny_model.split["val"][0]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _copy_case(tiny_model.raw, case_id, inputs, drop=(0, 3))
    code = impute_main(["-d", str(TINY_DATASET), "-f", "0", "-c", TINY_CONFIG, "-i", str(inputs), "-o", str(outputs),
                        "--save-confidence", "--batch-size", "3"])
    assert code == 0
    assert sorted(p.name for p in outputs.iterdir()) == sorted(
        [f"{case_id}_0000.nii.gz", f"{case_id}_0003.nii.gz", f"{case_id}_imputation.json", "confidence"])
    given = read_nifti(inputs / f"{case_id}_0001.nii.gz")
    brain = given.data != 0
    for channel in (0, 3):
        imputed = read_nifti(outputs / f"{case_id}_{channel:04d}.nii.gz")
        assert imputed.data.shape == given.data.shape and np.array_equal(imputed.affine, given.affine)
        assert imputed.data[brain].mean() > 0 and not imputed.data[~(brain | (read_nifti(
            inputs / f"{case_id}_0002.nii.gz").data != 0))].any()
    confidence = read_nifti(outputs / "confidence" / f"{case_id}.nii.gz").data
    assert confidence.shape == given.data.shape and 0 <= confidence.min() and confidence.max() <= 1
    assert confidence[brain].mean() > 0
    sidecar = json.loads((outputs / f"{case_id}_imputation.json").read_text())
    assert set(sidecar["imputed"]) == {"T1", "FLAIR"} and sidecar["imputed_from"] == ["T1Gd", "T2"]
    assert sidecar["model"]["checkpoint"] == "stage2/checkpoint_final.pth"
    assert sidecar["model"]["configuration"] == TINY_CONFIG and sidecar["model"]["stage2_iteration"] == 40
    assert sidecar["confidence"]["file"] == f"confidence/{case_id}.nii.gz"
    assert "median 99.5th" in sidecar["intensity_scale"]


def test_predictor_api_matches_the_cli_and_the_registry(tiny_model):
    predictor = CodeBrainPredictor.from_results(TINY_DATASET, 0, TINY_CONFIG)
    assert predictor.model_info["stage2_iteration"] == 40
    case_id = tiny_model.split["val"][0]
    images, affine, _ = _case(tiny_model.raw, case_id)
    available = [True, True, False, True]
    output = predictor.impute_arrays(images, available, affine)
    plans = read_json(tiny_model.fold_dir.parent / "plans.json")
    imputer = get_imputer("codebrain", ImputationContext(plans=plans, dataset=f"Dataset{TINY_DATASET}_DemoBraTS",
                                                         fold=0, configuration=TINY_CONFIG))
    np.testing.assert_allclose(imputer.impute(images, available, affine), output, atol=1e-5)
    by_folder = get_imputer("codebrain", ImputationContext(plans=plans, configuration=TINY_CONFIG,
                                                           model_dir=tiny_model.fold_dir,
                                                           options={"checkpoint": "best", "batch_size": 2}))
    assert by_folder.predictor.batch_size == 2 and by_folder.predictor.model_info["checkpoint"].endswith("best.pth")


def test_code_decoding_and_mirroring_change_the_output_and_are_recorded(tiny_model, tmp_path, capsys):
    case_id = tiny_model.split["val"][0]
    inputs = tmp_path / "in"
    _copy_case(tiny_model.raw, case_id, inputs, drop=(1,))
    runs = {"default": [], "count": ["--code-decoding", "count"], "mirror": ["--mirror"]}
    imputed, models = {}, {}
    for name, extra in runs.items():
        outputs = tmp_path / name
        assert impute_main(["-d", str(TINY_DATASET), "-c", TINY_CONFIG, "-i", str(inputs), "-o", str(outputs),
                            *extra]) == 0
        imputed[name] = read_nifti(outputs / f"{case_id}_0001.nii.gz").data
        models[name] = json.loads((outputs / f"{case_id}_imputation.json").read_text())["model"]
    assert [models[n]["code_decoding"] for n in runs] == ["expected", "count", "expected"]
    assert [models[n]["mirroring"] for n in runs] == [False, False, True]
    brain = imputed["default"] != 0
    for other in ("count", "mirror"):
        difference = np.abs(imputed[other] - imputed["default"])[brain]
        assert difference.max() > 0 and difference.mean() < 0.5 * imputed["default"][brain].mean()
    capsys.readouterr()
    code = impute_main(["-d", str(TINY_DATASET), "-c", TINY_CONFIG, "-i", str(inputs), "-o", str(tmp_path / "bad"),
                        "--method", "mean", "--mirror"])
    assert code == 2 and "--mirror applies to the slice-wise learned methods" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_registry_builds_codebrain_in_a_fresh_process_and_inference_needs_no_trainer(tiny_model):
    script = ("import sys\n"
              "import codebrain_seg.inference.codebrain\n"
              "assert not [m for m in sys.modules if m.startswith('trainers')], 'inference imported a trainer'\n"
              "from codebrain_seg.inference.request import ImputationContext\n"
              "from codebrain_seg.run.methods import get_imputer\n"
              "from codebrain_seg.io import read_json\n"
              f"plans = read_json({str(tiny_model.fold_dir.parent / 'plans.json')!r})\n"
              f"imputer = get_imputer('codebrain', ImputationContext(plans=plans, dataset='{TINY_DATASET}', fold=0, "
              f"configuration='{TINY_CONFIG}'))\n"
              "print(imputer.name, type(imputer.predictor).__name__)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["codebrain", "CodeBrainPredictor"]


def test_model_folder_without_stage_two_is_a_clear_error(tiny_model, tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    model = results / tiny_model.fold_dir.parent.parent.name / tiny_model.fold_dir.parent.name
    shutil.copytree(tiny_model.fold_dir / "stage1", model / "fold_0" / "stage1")
    shutil.copy(tiny_model.fold_dir.parent / "plans.json", model / "plans.json")
    monkeypatch.setenv("codebrain_results", str(results))
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    _copy_case(tiny_model.raw, tiny_model.split["val"][0], inputs, drop=(1,))
    code = impute_main(["-d", str(TINY_DATASET), "-f", "0", "-c", TINY_CONFIG, "-i", str(inputs), "-o", str(outputs)])
    assert code == 2
    error = capsys.readouterr().err
    assert "has no finished Stage II" in error and "--stage 2" in error
    assert not outputs.exists()
    with pytest.raises(FileNotFoundError, match="no trained model"):
        CodeBrainPredictor.from_results(TINY_DATASET, 1, TINY_CONFIG)


def test_each_torchrun_rank_imputes_its_share(tiny_model, tmp_path, monkeypatch):
    inputs = tmp_path / "in"
    cases = sorted(tiny_model.split["val"] + tiny_model.split["train"])[:3]
    for case_id in cases:
        _copy_case(tiny_model.raw, case_id, inputs, drop=(2,))
    written = {}
    for rank in (0, 1):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        outputs = tmp_path / f"out{rank}"
        impute_folder(TINY_DATASET, 0, inputs, outputs, TINY_CONFIG)
        written[rank] = sorted(p.name[:-len("_0002.nii.gz")] for p in outputs.glob("*_0002.nii.gz"))
    assert written == {0: [cases[0], cases[2]], 1: [cases[1]]}


# ---- the briefly trained real-data model ------------------------------------------------------------------

# Held-back cases (their slabs around the tumour) pooled by the confidence test.
CONFIDENCE_CASES = 1


def _cell_means(volume: np.ndarray, weight: np.ndarray, cell: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per code cell (``cell x cell`` in-plane blocks of a ``(S, H, W)`` crop): weighted mean and weight sum."""
    slices, height, width = volume.shape
    shape = (slices, height // cell, cell, width // cell, cell)
    total = weight.reshape(shape).sum(axis=(2, 4))
    return (volume * weight).reshape(shape).sum(axis=(2, 4)) / np.maximum(total, 1), total


def test_confidence_is_lower_where_the_imputation_is_worse(real_model, real_held_back_slabs, tmp_path):
    """Rank correlation (Spearman) between the confidence map and the absolute error on held-back real cases.

    ``codebrain_impute --save-confidence`` imputes each single missing sequence of ``CONFIDENCE_CASES`` held-back
    cases (each restricted to the slab of slices around its tumour, to fit the CI time); its confidence map (the
    Stage II ordinal probabilities, on the case's grid) and the error of the imputed sequence (both scaled to
    [0, 1]) are compared per code cell (the confidence's own resolution: 8 x 8 pixels of the model's crop),
    pooled over the cases and the four patterns.
    """
    from scipy.stats import spearmanr

    plans = read_json(real_model.fold_dir.parent / "plans.json")
    configuration = plans["configurations"][REAL_CONFIGURATION]
    names = list(plans["channel_names"])
    confidences, errors = [], []
    for case_id in real_held_back_slabs.case_ids[:CONFIDENCE_CASES]:
        volumes = [read_nifti(real_held_back_slabs.images / f"{case_id}_{c:04d}.nii.gz") for c in range(4)]
        images, affine = np.stack([v.data for v in volumes]), volumes[0].affine
        brain_all = (images != 0).any(axis=0)
        for missing in range(4):
            inputs, outputs = tmp_path / f"{case_id}_{missing}" / "in", tmp_path / f"{case_id}_{missing}" / "out"
            inputs.mkdir(parents=True)
            for channel in set(range(4)) - {missing}:
                name = f"{case_id}_{channel:04d}.nii.gz"
                (inputs / name).symlink_to(real_held_back_slabs.images / name)
            assert impute_main(["-d", str(REAL_DATASET), "-f", "0", "-c", REAL_CONFIGURATION, "-i", str(inputs),
                                "-o", str(outputs), "--save-confidence"]) == 0
            sidecar = json.loads((outputs / f"{case_id}_imputation.json").read_text())
            assert sidecar["imputed"] == {names[missing]: f"{case_id}_{missing:04d}.nii.gz"}
            assert sidecar["confidence"]["file"] == f"confidence/{case_id}.nii.gz"
            imputed = read_nifti(outputs / f"{case_id}_{missing:04d}.nii.gz").data
            confidence = read_nifti(outputs / "confidence" / f"{case_id}.nii.gz").data
            assert confidence.shape == imputed.shape == images.shape[1:]
            assert 0 <= confidence.min() and confidence.max() <= 1 and confidence[brain_all].mean() > 0
            available = [channel != missing for channel in range(4)]
            truth = np.clip(images[missing] / np.percentile(images[missing][brain_all], 99.5), 0, 1)
            error = np.abs(imputed / sidecar["reference_upper"][names[missing]] - truth)
            _, _, properties = prepare_case(images, available, affine, plans, configuration)
            brain = to_preprocessed_space(brain_all & (images[available] != 0).any(axis=0), properties)
            cell_confidence, counts = _cell_means(to_preprocessed_space(confidence, properties), brain)
            cell_error, _ = _cell_means(to_preprocessed_space(error, properties), brain)
            inside = counts >= 32  # cells at least half inside the brain
            confidences.append(cell_confidence[inside])
            errors.append(cell_error[inside])
    confidence, error = np.concatenate(confidences), np.concatenate(errors)
    rho, p_value = spearmanr(confidence, error)
    low, high = np.quantile(confidence, [0.25, 0.75])
    ratio = error[confidence <= low].mean() / error[confidence >= high].mean()
    print(f"\nSpearman rho {rho:.3f} (p {p_value:.1e}, {len(error)} cells); mean |error| in the least confident "
          f"quarter {error[confidence <= low].mean():.4f}, most confident {error[confidence >= high].mean():.4f} "
          f"(ratio {ratio:.2f})")
    assert rho < -0.05 and p_value < 1e-6
    assert ratio > 1.15


def test_cached_imputations_are_dropped_when_the_model_is_retrained(tiny_model, tmp_path):
    from evaluation.segmentation.evaluate import drop_stale_method_caches

    model_dir = tmp_path / "fold_0"
    shutil.copytree(tiny_model.fold_dir, model_dir)
    plans = read_json(tiny_model.fold_dir.parent / "plans.json")

    def imputer():
        return get_imputer("codebrain", ImputationContext(plans=plans, configuration=TINY_CONFIG, model_dir=model_dir))

    cache = tmp_path / "imputed" / "codebrain"
    cached = cache / "0111" / "CASE_0000.nii.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"from an unknown model")
    first = imputer()
    assert sorted(first.fingerprint()["checkpoints"]) == ["stage1", "stage2"]
    drop_stale_method_caches([cache], first, "codebrain")  # files without a record: unknown origin, dropped
    assert not cached.exists() and read_json(cache / "imputer.json") == {"method": "codebrain", **first.fingerprint()}
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"from this model")
    drop_stale_method_caches([cache], imputer(), "codebrain")  # the same model again: kept
    assert cached.read_bytes() == b"from this model"
    stage_two = model_dir / "stage2" / "checkpoint_final.pth"
    os.utime(stage_two, ns=(stage_two.stat().st_atime_ns, stage_two.stat().st_mtime_ns + 10**9))  # "retrained"
    drop_stale_method_caches([cache], imputer(), "codebrain")
    assert not cached.exists()
    zero_cache = tmp_path / "imputed" / "zero"
    (zero_cache / "0111").mkdir(parents=True)
    (zero_cache / "0111" / "CASE_0000.nii.gz").write_bytes(b"zero-fill")
    drop_stale_method_caches([zero_cache], get_imputer("zero", ImputationContext(plans=plans)), "zero")
    assert (zero_cache / "0111" / "CASE_0000.nii.gz").is_file()  # no model behind it: nothing to go stale
