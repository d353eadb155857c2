#!/usr/bin/env bash
# The one device command of a session lent a GPU: every GPU check of issues 13, 14 and 11 within BUDGET_S
# seconds (default 560), the logs packed into OUT/results.tgz (the device tool brings back at most 8 files):
#   bash benchmarks/gpu_session.sh OUT
# 1. the wheels the device image lacks: .whl/*.whl (pycocotools for its Python) and .whl/site (detectron2's
#    pure-Python dependencies fvcore, iopath, yacs, termcolor, omegaconf, antlr4), and detectron2's source in
#    .d2src, its CPU ops built in the background (README: "Carrying what the device image lacks");
# 2. issue 13, the gpu preset's first calibration (params/gpu/02_pretrain.yaml, not yet run): Table 2's GT-Crop
#    point at seed 0 (`coarsecrop sweep params/sweeps/table2.yaml --preset gpu --point K`, 5,000 scenes v3 of
#    256 px written by 12 processes, MoCo-v2 on a 32-wide ResNet-18 at 64 px): its wall time (the sizing: a
#    table sweep at one seed within 10 minutes) and its object-probe gain over the random init (the gate: +10
#    points), G13_S seconds (default 240);
# 3. benchmarks/gpu_check.sh (issue 14: crop job vs phi, GPU decode agreement, trainer whole-run rate,
#    torchrun equality and resume), G14_S seconds (default 170);
# 4. benchmarks/d2_gpu_check.sh (issue 11: Mask R-CNN R50-FPN and R50-C4 finetunes on the built-in scenes,
#    APs and seconds per iteration), D2_ITERS iterations at D2_BATCH images, the seconds that are left.
set -uo pipefail
OUT=${1:?usage: gpu_session.sh OUT}
R=/tmp/gpu_session
rm -rf $R; mkdir -p $R "$OUT"
START=$(date +%s)
BUDGET_S=${BUDGET_S:-560}
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
# the logs and figures only (text files under 2 MB): checkpoints and crops would pass the 16-MiB limit of a file
pack() { (cd $R && find . -type f \( -name "*.log" -o -name "*.txt" -o -name "*.json" -o -name "*.jsonl" -o -name "*.csv" \) \
              -size -2M -print0 | tar czf "$OUT/results.tgz" --null -T -); ls -l "$OUT/results.tgz"; }
trap pack EXIT
export PYTHONUNBUFFERED=1

echo "=== install ($(date +%T))"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 3
export PYTHONPATH=/tmp/site:$PWD/.whl/site:$PWD
python3 -c "import pycocotools, fvcore, iopath, yacs, omegaconf, termcolor, coarsecrop.cli" || exit 4
(cd .d2src && CUDA_VISIBLE_DEVICES= nice -n 10 python3 setup.py build_ext --inplace > $R/d2_build.log 2>&1
 echo $? > $R/d2_build.rc) &

echo "=== issue 13: the gpu preset ($(date +%T), $(( $(date +%s) - START )) s in)"
export MPLBACKEND=Agg
K=$(python3 -m coarsecrop sweep params/sweeps/table2.yaml --preset gpu --dry-run --seed 0 | awk '$NF == "gt" {print $1}')
T13=$(date +%s)
timeout ${G13_S:-240} python3 -m coarsecrop sweep params/sweeps/table2.yaml --preset gpu --point "$K" --quiet \
    > $R/g13.log 2>&1
echo "table2 point $K (GT-Crop, seed 0): rc $? after $(( $(date +%s) - T13 )) s"; tail -5 $R/g13.log
RID=$(python3 -m coarsecrop sweep params/sweeps/table2.yaml --preset gpu --dry-run --point "$K" | awk -v k="$K" '$1 == k {print $2; exit}')
mkdir -p $R/g13 && cp runs/02_pretrain/$RID/{metrics.json,run.json} runs/02_pretrain/$RID/train/metrics.jsonl $R/g13/ 2>/dev/null
python3 - $R/g13 <<'PY'
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])
try:
    m = json.loads((folder / "metrics.json").read_text())
except OSError:
    sys.exit("no metrics.json: the run did not finish (the steps it made are in metrics.jsonl)")
metrics = m.get("metrics", {})
for key in ("probe_linear_top1", "probe_knn_top1", "gain_bn_linear_top1", "gain_bn_knn_top1", "steps",
            "train_wall_s"):
    print(key, metrics.get(key))
print("crops", m.get("crops"), "provenance", m.get("provenance"))
PY
grep -h '"kind": "monitor"' $R/g13/metrics.jsonl 2>/dev/null | cut -c1-300

echo "=== issue 14 ($(date +%T), $(( $(date +%s) - START )) s in)"
WAIT_FOR=$R/d2_build.rc BUDGET_S=${G14_S:-170} bash benchmarks/gpu_check.sh $R/g14 2>&1 | tee $R/g14.log
wait

echo "=== issue 11 ($(date +%T), $(( $(date +%s) - START )) s in); build rc $(cat $R/d2_build.rc)"
tail -3 $R/d2_build.log
D2_S=$(( $(left) - 10 ))
(( D2_S > 30 )) && D2_SRC=.d2src ITERS=${D2_ITERS:-200} BATCH=${D2_BATCH:-8} D2_TIMEOUT=$(( D2_S / 2 )) \
    timeout $D2_S bash benchmarks/d2_gpu_check.sh $R/d2 2>&1 | tee $R/d2.log
for f in $R/d2/*.log; do echo "--- $f"; grep -E "eta:|Average Precision|AP,|copypaste|Error|error" "$f" | tail -8; done

echo "=== done in $(( $(date +%s) - START )) s"
