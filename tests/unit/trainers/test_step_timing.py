"""Measured step costs: real trainer steps of both stages on a tiny crop, cached per machine and candidate."""
from __future__ import annotations

import json

import pytest
import torch

import trainers.step_timing as step_timing
from planners.budget import NetworkSize
from planners.experiment_planner import PAPER_FSQ_LEVELS, _optimisation
from trainers.options import COMPILE_MIN_ITERATIONS, choose_compile

TINY = NetworkSize(4, 8, 8, 1)


def tiny_plans() -> dict:
    configuration = {"crop_size": [32, 32], "fsq_levels": PAPER_FSQ_LEVELS, "network": TINY.as_dict(),
                     "batch_size": 2, "data_identifier": "x", "optimisation": _optimisation(100, 2)}
    return {"channel_names": ["T1", "T1Gd", "T2", "FLAIR"], "configurations": {"2d_cpu": configuration}}


def test_measured_costs_are_positive_and_stage_two_is_timed_on_its_own_trainer(monkeypatch, one_thread):
    # Timed with the count a run would use (OMP_NUM_THREADS, else every core), whatever the caller had set.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    costs = step_timing.measure_step_costs(tiny_plans(), "2d_cpu", TINY, 2, steps=1)
    assert torch.get_num_threads() == 2, "the caller's thread count is restored"
    for stage in (costs.stage1, costs.stage2):
        assert stage.seconds_per_iteration > 0
        assert stage.validation_seconds_per_slice > 0
        assert stage.checkpoint_seconds > 0
    assert costs.source.startswith("measured on this machine") and "1 threads" in costs.source


def test_costs_are_cached_per_machine_and_candidate(tmp_path, monkeypatch, one_thread):
    cache = tmp_path / "costs.json"
    calls = []
    real = step_timing.measure_step_costs

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs, steps=1)

    monkeypatch.setattr(step_timing, "measure_step_costs", counting)
    costs = step_timing.measured_step_costs(tiny_plans(), "2d_cpu", cache=cache)
    first = costs(TINY, 2)
    again = costs(TINY, 2)
    assert calls == [TINY]  # the second ask is answered from the cache
    assert again == first
    stored = json.loads(cache.read_text())
    assert len(stored) == 1 and step_timing.machine_key("cpu") in next(iter(stored))
    costs(TINY, 1)  # another batch size is another candidate
    assert len(calls) == 2
    # a change to the networks or trainers (a faster kernel) makes the stored figures stale: measured again
    monkeypatch.setattr(step_timing, "code_fingerprint", lambda: "changed-code")
    step_timing.measured_step_costs(tiny_plans(), "2d_cpu", cache=cache)(TINY, 2)
    assert len(calls) == 3 and len(json.loads(cache.read_text())) == 3


def test_code_fingerprint_follows_the_sources(tmp_path):
    (tmp_path / "block.py").write_text("x = 1\n")
    first = step_timing.code_fingerprint([tmp_path])
    assert first == step_timing.code_fingerprint([tmp_path]) and len(first) == 12
    (tmp_path / "block.py").write_text("x = 2\n")
    assert step_timing.code_fingerprint([tmp_path]) != first
    assert step_timing.code_fingerprint() != first  # the default: this project's networks and trainers


@pytest.mark.parametrize("requested,iterations,expected", [
    (True, 10, True), (False, 10**6, False), (None, COMPILE_MIN_ITERATIONS - 1, False)])
def test_compile_follows_the_request_and_auto_skips_short_runs(requested, iterations, expected):
    assert choose_compile(requested, iterations, torch.device("cpu")) is expected


def test_compile_auto_turns_on_for_long_runs_only_where_it_pays(monkeypatch):
    import trainers.options as options

    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/g++")
    monkeypatch.setattr(options, "amx_cpu", lambda: True)  # an AMX Xeon: compiled bf16 was 1.4x faster
    assert choose_compile(None, COMPILE_MIN_ITERATIONS, torch.device("cpu")) is True
    monkeypatch.setattr(options, "amx_cpu", lambda: False)  # AVX512-BF16 EPYC and AVX2 CPUs: compiled was slower
    assert choose_compile(None, COMPILE_MIN_ITERATIONS, torch.device("cpu")) is False
    monkeypatch.setattr(options, "amx_cpu", lambda: True)
    monkeypatch.setattr("shutil.which", lambda name: None)  # no compiler for inductor's CPU kernels
    assert choose_compile(None, COMPILE_MIN_ITERATIONS, torch.device("cpu")) is False
    assert choose_compile(None, COMPILE_MIN_ITERATIONS, torch.device("cuda")) is True
