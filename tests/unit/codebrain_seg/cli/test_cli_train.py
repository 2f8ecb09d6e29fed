"""codebrain_seg/cli/train.py: the command line (choices, help, argument errors) without training."""
from __future__ import annotations

import pytest

from codebrain_seg.cli.train import main as train_main
from codebrain_seg.variants import (
    CODEBRAIN_ABLATIONS,
)


def test_command_line_lists_the_ablations_and_rejects_unknown_ones(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as help_exit:
        train_main(["--help"])
    assert help_exit.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "{none,no_fc,cls,l1,vq,continuous,fc_blank,fc_balanced}" in text
    assert "--loss-weights LAMBDA_M,LAMBDA_A" in text
    assert set(CODEBRAIN_ABLATIONS) == {"none", "no_fc", "cls", "l1", "vq", "continuous", "fc_blank", "fc_balanced"}
    for argv, message in ((["--ablation", "fsq"], "invalid choice: 'fsq'"),
                          (["--loss-weights", "20"], "loss weights must be two non-negative numbers")):
        with pytest.raises(SystemExit) as error_exit:
            train_main(["-d", "1", "-f", "0", *argv])
        assert error_exit.value.code == 2
        assert message in capsys.readouterr().err
