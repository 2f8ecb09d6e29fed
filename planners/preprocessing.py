"""The preprocessing pipeline: every raw case of a dataset -> the arrays of one configuration, resumable.

One writer per configuration kind (:data:`WRITERS`): ``2d_slices`` (CodeBrain, ``planners.slice_preprocessing``),
``3d_volume`` (CoPeDiT, ``planners.volume_preprocessing``) and ``3d_cardiac_stack`` (CoPeDiT's missing slices,
``planners.cardiac_preprocessing``); all build on ``planners.case_arrays``. A case is
finished when its properties file (written last) exists and names its arrays, so an interrupted run resumes.
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from tqdm import tqdm

from codebrain_seg.errors import InputError
from codebrain_seg.io import read_json
from codebrain_seg.raw_dataset import list_cases
from planners.cardiac_preprocessing import preprocess_cardiac_case
from planners.case_arrays import normalise, normalised_stack  # noqa: F401 (the normalisation's public home)
from planners.slice_preprocessing import preprocess_case, restore_to_original  # noqa: F401 (2D API)
from planners.volume_preprocessing import preprocess_volume_case

logger = logging.getLogger(__name__)

Writer = Callable[[Path, str, Path, Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
WRITERS: dict[str, Writer] = {"2d_slices": preprocess_case, "3d_volume": preprocess_volume_case,
                              "3d_cardiac_stack": preprocess_cardiac_case}


def is_case_done(out_dir: Path, case_id: str) -> bool:
    """A case is finished when its properties file (written last) exists and names its arrays."""
    props = out_dir / f"{case_id}.json"
    if not props.is_file() or not (out_dir / f"{case_id}.npy").is_file():
        return False
    try:
        properties = read_json(props)
        # A truncated array (a copy cut short) must not count as done: its header states the full size.
        np.load(out_dir / f"{case_id}.npy", mmap_mode="r")
    except (ValueError, OSError):
        return False
    return not properties.get("has_label") or (out_dir / f"{case_id}_seg.npy").is_file()


def preprocess_dataset(raw_dir: Path, preprocessed_dir: Path, plans: Mapping[str, Any], configuration_name: str,
                       num_processes: int = 1) -> list[str]:
    """Preprocess every case of a raw dataset for one configuration; finished cases are skipped."""
    configuration = plans["configurations"][configuration_name]
    out_dir = preprocessed_dir / configuration["data_identifier"]
    kind = configuration.get("kind", "2d_slices")
    if kind not in WRITERS:
        raise InputError(f"configuration {configuration_name!r} ({kind}) has no preprocessing yet; "
                         f"preprocessed kinds: {', '.join(WRITERS)}")
    worker = WRITERS[kind]
    cases = list_cases(raw_dir)
    todo = [c for c in cases if not is_case_done(out_dir, c)]
    if len(todo) < len(cases):
        logger.info("%s: %d of %d cases already preprocessed, skipped", configuration_name,
                    len(cases) - len(todo), len(cases))
    if num_processes > 1 and len(todo) > 1:
        with ProcessPoolExecutor(num_processes) as pool:
            futures = {pool.submit(worker, raw_dir, case, out_dir, plans, configuration): case
                       for case in todo}
            for future in tqdm(futures, desc=f"preprocess {configuration_name}", unit="case"):
                future.result()  # re-raises a worker's error with its message instead of dying silently
    else:
        for case in tqdm(todo, desc=f"preprocess {configuration_name}", unit="case"):
            worker(raw_dir, case, out_dir, plans, configuration)
    return todo
