"""CoPeDiT's cardiac task end to end on the procedural phantom, in well under a minute on one thread.

A phantom dataset (3 subjects x ED / ES, 32 x 32 x 8 stacks of 1.5 x 1.5 x 10 mm, LPS) is planned; a tiny
configuration derived from ``3d_cardiac_cpu`` (stacks 32 x 32 x 16 as 4 slabs, VQVAE 8 / 16, MDiT3D width 48,
depth 2, 4 DDIM steps, 8 + 8 iterations) is preprocessed by the cardiac writer, trained by ``codebrain_train
--method copedit -c 3d_cardiac_tiny`` (Stage I CoPeVAE-C with the slab pretext tasks, Stage II MDiT3D-C on cached
latents), then ``codebrain_impute`` fills a held-out stack's all-zero slice and ``evaluate_slices`` scores CoPeDiT
beside linear interpolation.

Asserts: both stages finish with their checkpoints and validation records (pretext accuracy over the 9 runs of
slabs, Stage II run PSNR); the imputed stack keeps the input's grid, data type and given slices bit for bit, the
filled slice differs from zero, the sidecar names it and the slabs the model generated; the evaluation table has
CoPeDiT and linear rows for each length, none skipped.
"""
from __future__ import annotations

import copy
import json

import nibabel as nib
import numpy as np

from codebrain_seg.cardiac_phantom import make_cardiac_dataset
from codebrain_seg.cli.impute import main as impute_main
from codebrain_seg.cli.train import main as train_main
from codebrain_seg.io import read_json, write_json
from codebrain_seg.networks.copedit import CoPeDiTConfig
from evaluation.slices.evaluate import evaluate_slices
from planners.plan_and_preprocess import plan_and_preprocess

TINY = "3d_cardiac_tiny"


def _tiny(cpu: dict) -> dict:
    tiny = copy.deepcopy(cpu)
    network = tiny["network"]
    network["volume_shape"] = [32, 32, 4]
    network["vae"].update(channels=[8, 16], num_res_channels=[8, 16], num_embeddings=64, prompt_conv_widths=[16, 32],
                          prompt_hidden=32, prompt_dim=32, contrastive_dim=16, discriminator_channels=4)
    network["dit"].update(width=48, depth=2, num_heads=2, mlp_hidden=96, rope_dims=[8, 8, 8], prompt_dim=32)
    network["diffusion"].update(sampling_steps=4)
    CoPeDiTConfig.from_dict(network)  # a valid network
    tiny.update(target_size=[32, 32, 16], data_identifier=f"codebrainPlans_{TINY}")
    tiny["optimisation"]["stage1"] = {"iterations": 8, "batch_size": 2}
    tiny["optimisation"]["stage2"] = {"iterations": 8, "batch_size": 4}
    tiny["optimisation"]["pretext_patterns_per_case"] = 2
    return tiny


def test_cardiac_copedit_trains_imputes_and_evaluates(project_dirs, tmp_path, one_thread):
    make_cardiac_dataset(43, num_subjects=3, shape=(32, 32, 8))
    preprocessed = plan_and_preprocess(43)
    plans = read_json(preprocessed / "codebrainPlans.json")
    plans["configurations"][TINY] = _tiny(plans["configurations"]["3d_cardiac_cpu"])
    write_json(preprocessed / "codebrainPlans.json", plans)
    plan_and_preprocess(43, [TINY])
    assert np.load(preprocessed / f"codebrainPlans_{TINY}" / "phantom000_ED.npy").shape == (4, 32, 32, 4)

    assert train_main(["-d", "43", "-f", "0", "-c", TINY, "--method", "copedit", "--device", "cpu",
                       "--val-every", "8", "--log-every", "4", "--compile", "off"]) == 0
    fold = project_dirs["results"] / "Dataset043_CardiacPhantom" / f"CoPeDiT__codebrainPlans__{TINY}" / "fold_0"
    for stage in ("stage1", "stage2"):
        assert (fold / stage / "checkpoint_final.pth").is_file()
    records = [json.loads(line) for line in (fold / "stage1" / "metrics.jsonl").read_text().splitlines()]
    val1 = [r for r in records if r["kind"] == "val"][-1]
    assert {"count_accuracy", "position_accuracy", "psnr", "ssim"} <= set(val1)
    records = [json.loads(line) for line in (fold / "stage2" / "metrics.jsonl").read_text().splitlines()]
    val2 = [r for r in records if r["kind"] == "val"][-1]
    assert np.isfinite(val2["psnr"]) and "zero_fill_psnr" in val2

    split = read_json(preprocessed / "splits_final.json")[0]
    case = split["val"][0]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    source = nib.load(str(project_dirs["raw"] / "Dataset043_CardiacPhantom" / "imagesTr" / f"{case}_0000.nii.gz"))
    stack = np.asarray(source.dataobj).copy()
    stack[..., 4] = 0
    nib.save(nib.Nifti1Image(stack, source.affine, source.header), str(inputs / "held_out_0000.nii.gz"))
    assert impute_main(["-d", "43", "-f", "0", "-c", TINY, "-i", str(inputs), "-o", str(outputs)]) == 0
    result = nib.load(str(outputs / "held_out_0000.nii.gz"))
    filled = np.asarray(result.dataobj)
    assert filled.dtype == stack.dtype and np.array_equal(result.affine, source.affine)
    assert np.array_equal(np.delete(filled, 4, axis=2), np.delete(stack, 4, axis=2))
    assert np.abs(filled[..., 4]).max() > 0
    sidecar = json.loads((outputs / "held_out_imputation.json").read_text())
    assert sidecar["filled_slices"] == [4] and sidecar["method"] == "copedit"
    assert sidecar["method_info"]["generated_slabs"] and sidecar["model"]["configuration"] == TINY

    evaluation = evaluate_slices(43, 0, TINY, ["copedit", "linear"], [1, 2], runs_per_case=1, max_cases=1)
    groups = {(g["length"], g["method"]): g for g in evaluation.table["groups"]}
    assert set(groups) == {(n, m) for n in (1, 2) for m in ("copedit", "linear")}
    assert all(g["skipped"] == 0 and np.isfinite(g["psnr_2d"]["mean"]) for g in groups.values())
    assert (evaluation.output_dir / "table.md").is_file()
