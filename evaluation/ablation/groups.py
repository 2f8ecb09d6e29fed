"""The ablation groups of the CodeBrain papers, as data: which trained variants each table compares, and how.

A **group** is one of the papers' ablation tables or figures; its **rows** are settings, each a trained
:class:`Variant` (the ``codebrain_seg.run.training.run_training`` keyword arguments that select it) scored on one or both
**stages**:

* ``rec`` — Stage I reconstruction from the *oracle* code of the complete stack plus F_c of the masked stack
  (the papers' "Rec." rows, an upper bound; needs Stage I only);
* ``imp`` — imputation (Stage II predicts the code from the masked stack; the papers' "Imp." rows).

A row may also ask for the best instead of the final checkpoint (``checkpoint='best'``, Rec. only), or for the
F_c-reliance diagnostic (``fc_input='zeros'``: its model's oracle-code reconstruction
with F_c computed from zeros, :mod:`evaluation.ablation.reconstruction`); it reuses the model of the row it probes.

Both are scored with the paper protocol (middle slices, whole image, PSNR / SSIM x100 / MAE x1000, O->O, M->O
and the unweighted mean over all (pattern, missing sequence) pairs). ``paper`` holds the published IXI figures of
a row when the paper reports that exact setting (PSNR, SSIM, MAE; None where not reported), and each group's
``claims`` are the orderings the papers state, checked on the user's data by the report.

Sources: CodeBrain, CVPR 2026, Table 3, section 4.4 (L_psnr), Table 5 and Fig. 6;
and its arXiv v1, Table 3 and Fig. 6. The ``fc_control`` group is not a paper table: it is the controlled
experiment behind the papers' F_c claim (the blank-F_c control, the fusion-init option and the diagnostic).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from codebrain_seg.errors import InputError, UnknownNameError
from codebrain_seg.variants import CodeBrainVariant

STAGES = ("rec", "imp")
STAGE_LABELS = {"rec": "Rec.", "imp": "Imp."}
# Trained stages each evaluation needs: reconstruction decodes oracle codes (Stage I); imputation needs both.
STAGES_NEEDED = {"rec": (1,), "imp": (1, 2)}
LAYOUTS = ("metrics", "psnr")
# Code dimensions of the v1 paper's Fig. 6.
CODE_DIMS = (4, 5, 6, 7)
# Where the Rec. scoring takes F_c from (evaluation.ablation.reconstruction.FC_INPUTS).
FC_INPUTS = ("masked", "zeros")
CHECKPOINTS = ("final", "best")  # which Stage I checkpoint a Rec. row scores


# One trained model: the run_training switches that select it (defaults = the CVPR method as planned).
Variant = CodeBrainVariant


@dataclass(frozen=True)
class Row:
    """One setting of a group: its label in the paper's table, the variant, optional extra keys (e.g. d), and
    where the Rec. scoring takes F_c from (``'masked'``, the papers'; ``'zeros'``, the F_c-reliance diagnostic)."""

    label: str
    variant: Variant | str  # a CoPeDiT group's rows: the CoPeDiT option (``none``, ``mask``)
    paper: dict[str, tuple[float | None, float | None, float | None]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    fc_input: str = "masked"
    checkpoint: str = "final"

    def __post_init__(self) -> None:
        if self.fc_input not in FC_INPUTS:
            raise InputError(f"row {self.label!r}: fc_input must be one of {FC_INPUTS}, got {self.fc_input!r}")
        if self.checkpoint not in CHECKPOINTS:
            raise InputError(f"row {self.label!r}: checkpoint must be one of {CHECKPOINTS}, got {self.checkpoint!r}")

    def scoring(self, stage: str) -> tuple[str, str]:
        """``(F_c input, checkpoint)`` the row is scored with on ``stage`` (Stage II imputation: the defaults)."""
        return (self.fc_input, self.checkpoint) if stage == "rec" else ("masked", "final")


@dataclass(frozen=True)
class Claim:
    """An ordering a paper states: on ``stage``, ``better`` has a PSNR > (``strict``) or >= each of ``worse``
    (mean over pairs)."""

    stage: str
    better: str
    worse: tuple[str, ...]
    text: str
    strict: bool = True


@dataclass(frozen=True)
class Group:
    """One ablation table or figure of the papers (module docstring)."""

    name: str
    title: str
    source: str
    stages: tuple[str, ...]
    rows: tuple[Row, ...]
    layout: str = "metrics"  # 'metrics': PSNR / SSIM / MAE per (stage, row); 'psnr': PSNR per row and stage
    claims: tuple[Claim, ...] = ()
    note: str = ""
    # Whose variants the rows are: 'codebrain' (evaluation.ablation.run trains them) or 'copedit' (rows are
    # CoPeDiT options, trained and scored by evaluation.ablation.prompts with one shared Stage I).
    method: str = "codebrain"

    def row(self, label: str) -> Row:
        """The row with this label (KeyError naming the known ones)."""
        for row in self.rows:
            if row.label == label:
                return row
        raise UnknownNameError(f"group {self.name!r} has no row {label!r}; rows: "
                               f"{', '.join(r.label for r in self.rows)}")


PLAIN = Variant()
V1 = Variant(variant="v1")

GROUPS: dict[str, Group] = {group.name: group for group in (
    Group("rec_fc", "Effect of the common features F_c (reconstruction)",
          "CVPR 2026 Table 3 (top, 'Rec.'); v1 Table 3 ('Stage I (w/ F_c)')", ("rec",),
          (Row("w/o F_c", Variant(ablation="no_fc"), paper={"rec": (30.15, 92.75, 15.87)}),
           Row("w/ F_c", PLAIN, paper={"rec": (34.32, 95.94, 10.65)})),
          claims=(Claim("rec", "w/ F_c", ("w/o F_c",), "with F_c > without in reconstruction"),),
          note="The papers report F_c for reconstruction only."),
    Group("grading", "Stage II: classification vs grading (imputation)",
          "CVPR 2026 Table 3 (bottom, 'Imp.'); v1 Table 3 ('Stage II (w/ CLS)')", ("imp",),
          (Row("w/ Cls.", Variant(ablation="cls"), paper={"imp": (29.24, 92.83, 18.00)}),
           Row("w/ Grad.", PLAIN, paper={"imp": (29.50, 93.05, 17.57)})),
          claims=(Claim("imp", "w/ Grad.", ("w/ Cls.",), "grading >= classification", strict=False),),
          note="Classification shares the plain method's Stage I."),
    Group("loss", "Stage I reconstruction loss: L_1 vs L_psnr",
          "CVPR 2026 section 4.4, 'Effects of L_psnr' (figures in the text)", ("rec",),
          (Row("L_1", Variant(ablation="l1"), paper={"rec": (34.08, 96.28, None)}),
           Row("L_psnr", PLAIN, paper={"rec": (34.32, 95.94, None)})),
          claims=(Claim("rec", "L_psnr", ("L_1",), "L_psnr > L_1 in PSNR (the paper: lower SSIM)"),)),
    Group("quantiser", "Quantiser of the codes (reconstruction)",
          "v1 Table 3 (VQ* vs FSQ*, Stage I); continuous codes from CVPR 2026 Fig. 6", ("rec",),
          (Row("VQ", Variant(ablation="vq")),
           Row("FSQ", PLAIN),
           Row("continuous", Variant(ablation="continuous"))),
          claims=(Claim("rec", "FSQ", ("VQ",), "FSQ >= VQ in reconstruction", strict=False),),
          note="v1 compares VQ and FSQ at d = 5 without F_c (VQ* 28.68 dB, FSQ* 32.50 dB on IXI); here both keep "
               "the plans' code dimension and F_c, so the paper's figures are not comparable and not shown."),
    Group("condition", "Condition of the decoder: VQ codes, FSQ codes, continuous (reconstruction and imputation)",
          "CVPR 2026 Fig. 6 ('Selection of Conditions')", ("rec", "imp"),
          (Row("VQ codes", Variant(ablation="vq")),
           Row("FSQ codes", PLAIN),
           Row("continuous", Variant(ablation="continuous"))),
          layout="psnr",
          claims=(Claim("imp", "FSQ codes", ("continuous",), "discrete codes > continuous conditions in imputation"),),
          note="Fig. 6's first column (fixed binary conditions) has no switch here and is not reproduced; the paper "
               "gives the figure without numbers."),
    Group("weights", "Stage I loss weights (lambda_m, lambda_a) (reconstruction)",
          "CVPR 2026 Table 5", ("rec",),
          (Row("lambda_m = 10", Variant(loss_weights=(10.0, 5.0)), paper={"rec": (33.83, None, None)},
               extra={"lambda_m": 10.0, "lambda_a": 5.0}),
           Row("lambda_m = 20", Variant(loss_weights=(20.0, 5.0)), paper={"rec": (34.32, None, None)},
               extra={"lambda_m": 20.0, "lambda_a": 5.0}),
           Row("lambda_m = 30", Variant(loss_weights=(30.0, 5.0)), paper={"rec": (34.21, None, None)},
               extra={"lambda_m": 30.0, "lambda_a": 5.0}),
           Row("lambda_a = 3", Variant(loss_weights=(20.0, 3.0)), paper={"rec": (34.26, None, None)},
               extra={"lambda_m": 20.0, "lambda_a": 3.0}),
           Row("lambda_a = 7", Variant(loss_weights=(20.0, 7.0)), paper={"rec": (34.01, None, None)},
               extra={"lambda_m": 20.0, "lambda_a": 7.0})),
          layout="psnr",
          claims=(Claim("rec", "lambda_m = 20", ("lambda_m = 10", "lambda_m = 30", "lambda_a = 3", "lambda_a = 7"),
                        "(lambda_m, lambda_a) = (20, 5) is the best pair"),),
          note="Table 5 varies lambda_m with lambda_a = 5 (left half) and lambda_a with lambda_m = 20 (right half); "
               "its PSNR is the reconstruction's (34.32 dB = Table 3 'Rec. w/ F_c')."),
    Group("variant", "CodeBrain v1 (per-modality codes) vs CVPR (full-stack code)",
          "v1 Tables 2-3 vs CVPR 2026 Tables 2-3 (each paper's own IXI figures)", ("rec", "imp"),
          (Row("v1 (per-modality codes)", V1, paper={"rec": (35.47, 96.10, 9.22), "imp": (29.01, 92.09, 18.27)}),
           Row("CVPR (full-stack code)", PLAIN, paper={"rec": (34.32, 95.94, 10.65), "imp": (29.50, 93.05, 17.57)})),
          claims=(Claim("imp", "CVPR (full-stack code)", ("v1 (per-modality codes)",),
                        "the CVPR design imputes at least as well as v1", strict=False),),
          note="The two papers' figures come from different trainings (v1: d = 7, L = 5; CVPR: L = [8,8,8,5,5,5])."),
    Group("dim", "Code dimension d of CodeBrain v1",
          "v1 Fig. 6 ('Selection of Code Dimensions d')", ("rec", "imp"),
          tuple(Row(f"d = {d}", Variant(variant="v1", code_dim=d), extra={"d": d}) for d in CODE_DIMS),
          layout="psnr",
          claims=(Claim("rec", f"d = {CODE_DIMS[-1]}", (f"d = {CODE_DIMS[0]}",),
                        "a larger d improves reconstruction (v1: +2.16 dB from d = 4 to 7; imputation stable)"),),
          note="The paper gives the figure without a table of numbers."),
    Group("fc_control", "Controlled F_c experiment: without F_c, with F_c, blank F_c (reconstruction)",
          "the controls behind CVPR 2026 Table 3 (top) and v1 Table 3 (not a paper table)", ("rec",),
          (Row("w/o F_c", Variant(ablation="no_fc"), paper={"rec": (30.15, 92.75, 15.87)}),
           Row("w/ F_c", PLAIN, paper={"rec": (34.32, 95.94, 10.65)}),
           Row("blank F_c", Variant(ablation="fc_blank")),
           Row("w/ F_c, balanced fusion init", Variant(ablation="fc_balanced")),
           Row("w/ F_c, F_c of zeros at test", PLAIN, fc_input="zeros"),
           Row("w/o F_c, best checkpoint", Variant(ablation="no_fc"), checkpoint="best"),
           Row("w/ F_c, best checkpoint", PLAIN, checkpoint="best"),
           Row("blank F_c, best checkpoint", Variant(ablation="fc_blank"), checkpoint="best")),
          claims=(Claim("rec", "w/ F_c", ("w/o F_c",), "with F_c > without in reconstruction (the papers' claim)"),
                  Claim("rec", "w/ F_c", ("blank F_c",),
                        "the content of F_c, not its extra parameters, makes the gain: with F_c > blank F_c"),
                  Claim("rec", "w/ F_c, balanced fusion init", ("w/o F_c",),
                        "the gain survives a fusion init that gives the codes the no-F_c scale"),
                  Claim("rec", "w/ F_c", ("w/ F_c, F_c of zeros at test",),
                        "the trained decoder uses F_c: F_c of the masked stack > F_c of zeros"),
                  Claim("rec", "w/ F_c, best checkpoint", ("w/o F_c, best checkpoint",),
                        "with F_c > without at the best checkpoints too")),
          note="blank F_c has the F_c model's architecture, parameter count and initial weights (same seed), but "
               "its common encoder reads zeros in training and inference. The balanced fusion init rescales the "
               "decoder's 1x1 fusion weights of the code channels by sqrt((d + f) / d) at init (f = F_c channels), "
               "the scale they have without F_c. The last row decodes the w/ F_c model's oracle codes with F_c of "
               "an all-zero stack (no training). The best-checkpoint rows score checkpoint_best.pth (picked on the "
               "fold's validation cases: optimistic on them, equally for each arm). Rec. scores the missing "
               "sequences, as the papers; the details give the given sequences' PSNR too."),
    Group("copedit_prompts", "CoPeDiT: learned completeness prompts vs binary mask codes (imputation)",
          "CoPeDiT Table 4 ('w/ Mask Codes' vs 'CoPeDiT')", ("imp",),
          (Row("w/ Mask Codes", "mask"),
           Row("learned prompts (CoPeDiT)", "none")),
          claims=(Claim("imp", "learned prompts (CoPeDiT)", ("w/ Mask Codes",),
                        "learned completeness prompts > binary mask codes in imputation"),),
          method="copedit",
          note="Both arms share one Stage I (CoPeVAE, trained once; its prompt encoders are frozen) and differ only "
               "in MDiT3D's condition; each seed retrains Stage II of both arms. CoPeDiT trains its own 3D "
               "configuration; the scores are the paper protocol on this 2D configuration's slices. The paper's "
               "BraTS 2021 figures (Table 4, PSNR with 1 / 2 / 3 missing): mask codes 27.18 / 26.82 / 26.18 dB, "
               "learned prompts 28.26 / 28.13 / 27.91 dB (not shown in the table: a different protocol)."),
)}


def parse_groups(which: str | Sequence[str] | None) -> list[Group]:
    """``'rec_fc,grading'`` (or a list, or None/``'all'`` = every group) -> groups in the order given.

    Raises:
        ValueError: empty selection or an unknown name (the message lists the known ones).
    """
    if which is None:
        names = list(GROUPS)
    else:
        items = which.split(",") if isinstance(which, str) else list(which)
        names = [str(item).strip() for item in items if str(item).strip()]
        if names == ["all"]:
            names = list(GROUPS)
    if not names:
        raise InputError(f"no ablation group selected; known groups: {', '.join(GROUPS)} (or all)")
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        raise InputError(f"unknown ablation group(s) {', '.join(repr(n) for n in unknown)}; known groups: "
                         f"{', '.join(GROUPS)} (or all)")
    return [GROUPS[name] for name in dict.fromkeys(names)]


def codebrain_groups(groups: Sequence[Group]) -> list[Group]:
    """The groups whose rows are CodeBrain variants (the others are CoPeDiT's, :mod:`evaluation.ablation.prompts`)."""
    return [group for group in groups if group.method == "codebrain"]


def needed_stages(groups: Sequence[Group]) -> dict[Variant, tuple[int, ...]]:
    """Every variant the groups use (first use first, so the plain method trains first) -> trained stages needed."""
    needed: dict[Variant, set[int]] = {}
    for group in codebrain_groups(groups):
        for row in group.rows:
            for stage in group.stages:
                needed.setdefault(row.variant, set()).update(STAGES_NEEDED[stage])
    order = sorted(needed, key=lambda variant: variant != PLAIN)  # stable: the plain method first
    return {variant: tuple(sorted(needed[variant])) for variant in order}


def evaluations(groups: Sequence[Group]) -> list[tuple[Variant, str, str, str]]:
    """Every (variant, stage, F_c input, checkpoint) to score, each once (:meth:`Row.scoring`)."""
    scorings: dict[tuple[Variant, str, str, str], None] = {}
    for group in codebrain_groups(groups):
        for row in group.rows:
            for stage in group.stages:
                scorings[(row.variant, stage, *row.scoring(stage))] = None
    return list(scorings)
