#!/usr/bin/env bash
# The GPU path in one short run (under 8 minutes on one GPU): plan with --device cuda, train the paper
# configuration (2d) for a few hundred iterations per stage in bf16, the same through torchrun (NCCL), impute one
# volume; prints slices/s, peak GPU memory, the validation PSNR and the imputation seconds.
#
#   bash benchmarks/gpu_check.sh [--wheels DIR] [--real CASE_DIR] [--iterations N]
#
# The machine may have PyTorch with CUDA and nothing else, and no network: --wheels installs the project's other
# dependencies from a folder of wheels made beforehand (on a machine of the same Python and platform:
# `pip download -d DIR -c .ci/constraints.txt monai nnunetv2 nibabel SimpleITK batchgenerators scipy tqdm matplotlib`
# then delete the torch wheels from DIR). Data: the built-in phantom at 240 x 240 x 155 (no ../shared needed), or
# --real CASE_DIR, a folder of BraTS cases (CASE/CASE_{t1,t1ce,t2,flair,seg}.nii.gz).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS="" REAL="" ITERATIONS=300
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS=$2; shift 2 ;;
        --real) REAL=$2; shift 2 ;;
        --iterations) ITERATIONS=$2; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
if [ -n "$WHEELS" ]; then
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" monai nnunetv2 nibabel SimpleITK batchgenerators \
        scipy tqdm matplotlib
    "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
fi
"$PY" -c "import nnunetv2, monai, codebrain_seg; print('dependencies ok')"

WORK="$OUT/work"; mkdir -p "$WORK"
export codebrain_raw="$WORK/raw" codebrain_preprocessed="$WORK/preprocessed" codebrain_results="$WORK/results"
if [ -n "$REAL" ]; then
    codebrain_convert_brats "$REAL" -d 960 --name GPUCheck
else
    codebrain_make_demo_dataset -d 960 --name GPUCheck --cases 8 --shape 240 240 155
fi
timed() { local start=$SECONDS; "$@"; echo "seconds[$1 ${*:2:3}]: $((SECONDS - start))"; }
timed codebrain_plan_and_preprocess -d 960 -c 2d --device cuda --no-benchmark  # 2d_cpu is not trained here
timed codebrain_train -d 960 -f 0 -c 2d --device cuda --precision bf16 --iterations "$ITERATIONS" \
    --val-every "$ITERATIONS" --log-every 50
RUN="$WORK/results/Dataset960_GPUCheck/CodeBrain__codebrainPlans__2d/fold_0"
"$PY" - "$RUN" <<'EOF'
import json, sys
from pathlib import Path
for stage in ("stage1", "stage2"):
    records = [json.loads(line) for line in (Path(sys.argv[1]) / stage / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    seconds = [r.get("seconds_per_iteration") for r in train if r.get("seconds_per_iteration")]
    print(stage, "last train record:", {k: train[-1].get(k) for k in ("iteration", "seconds_per_iteration",
                                                                          "slices_per_second", "gpu_memory_gb")})
    print(stage, "validation:", {k: val[-1].get(k) for k in ("iteration", "psnr", "ssim", "score")} if val else None)
EOF
# The same through torchrun (one process, NCCL): a second fold, fewer iterations.
timed torchrun --standalone --nproc_per_node 1 "$(command -v codebrain_train)" -d 960 -f 1 -c 2d --device cuda \
    --precision bf16 --iterations 50 --val-every 50 --stage 1
CASE=$(ls "$WORK/raw/Dataset960_GPUCheck/imagesTr" | head -n 1 | sed 's/_0000.nii.gz//')
mkdir -p "$WORK/in"
for c in 0 2 3; do cp "$WORK/raw/Dataset960_GPUCheck/imagesTr/${CASE}_000$c.nii.gz" "$WORK/in/"; done
timed codebrain_impute -d 960 -f 0 -c 2d --device cuda -i "$WORK/in" -o "$WORK/out" --save-confidence
"$PY" -c "import torch; print('peak GPU memory of this process: n/a (each command is its own process; see the train records)')"
echo "gpu_check done: $OUT"
