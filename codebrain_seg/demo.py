"""The whole chain on built-in phantom data: demo dataset -> plans -> Stage I/II -> imputation and segmentation tables."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEMO_DATASET_ID = 990
DEMO_CASES = 10
DEMO_ITERATIONS = 200  # per stage
DEMO_CONFIGURATION = "2d_demo"
# A network small enough that both stages train in minutes on a 2-core CPU: the demo shows the chain, not accuracy.
DEMO_NETWORK = {"posterior_width": 8, "common_width": 16, "decoder_width": 16, "depth": 1}


def run_demo(workdir: Path, device: str = "cpu", iterations: int = DEMO_ITERATIONS,
             num_cases: int = DEMO_CASES) -> dict[str, Any]:
    """Run every stage in ``workdir`` (its raw/preprocessed/results folders); returns where the outputs are."""
    workdir = Path(workdir).resolve()
    for kind in ("raw", "preprocessed", "results"):
        (workdir / kind).mkdir(parents=True, exist_ok=True)
        os.environ[f"codebrain_{kind}"] = str(workdir / kind)
    from codebrain_seg.demo_data import make_demo_dataset
    from codebrain_seg.paths import raw_root
    from evaluation.imputation.evaluate import evaluate_imputation
    from evaluation.segmentation.evaluate import evaluate_segmentation
    from planners.plan_and_preprocess import add_configuration, plan_and_preprocess
    from trainers import run_training

    timings: dict[str, float] = {}

    def stage(name: str, function, *args, **kwargs):
        start = time.perf_counter()
        logger.info("demo: %s ...", name)
        result = function(*args, **kwargs)
        timings[name] = time.perf_counter() - start
        logger.info("demo: %s done in %.0f s", name, timings[name])
        return result

    if not any(raw_root().glob(f"Dataset{DEMO_DATASET_ID:03d}_*")):
        stage("make demo dataset", make_demo_dataset, DEMO_DATASET_ID, num_cases=num_cases)
    preprocessed = stage("plan and preprocess", plan_and_preprocess, DEMO_DATASET_ID, ["2d_cpu"])
    add_configuration(preprocessed, DEMO_CONFIGURATION, "2d_cpu", "the demo's minutes-long CPU budget",
                      network=dict(DEMO_NETWORK))
    stage("train Stage I and II", run_training, DEMO_DATASET_ID, 0, DEMO_CONFIGURATION, stage="all",
          iterations=iterations, device=device, continue_training=True)
    imputation_dir = stage("evaluate imputation", evaluate_imputation, DEMO_DATASET_ID, 0, DEMO_CONFIGURATION,
                           methods=["codebrain", "zero", "mean"], device=device, protocols=["paper"])
    segmentation = stage("evaluate segmentation", evaluate_segmentation, DEMO_DATASET_ID, 0, DEMO_CONFIGURATION,
                         train_segmenter=True, seg_trainer="nnUNetTrainerShort",
                         methods=["codebrain", "zero"], device=device, use_mirroring=False)
    return {"imputation": Path(imputation_dir), "segmentation": segmentation.output_dir, "timings": timings}
