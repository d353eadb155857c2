#!/usr/bin/env bash
# The one device command of a session lent a GPU: every GPU check of issues 14, 11 and 13 within BUDGET_S
# seconds (default 560), the logs packed into OUT/results.tgz (the device tool brings back at most 8 files):
#   bash benchmarks/gpu_session.sh OUT
# 1. the wheels the device image lacks: .whl/*.whl (pycocotools for its Python) and .whl/site (detectron2's
#    pure-Python dependencies fvcore, iopath, yacs, termcolor, omegaconf, antlr4), and detectron2's source in
#    .d2src, its CPU ops built in the background (README: "Carrying what the device image lacks");
# 2. benchmarks/gpu_check.sh (issue 14: crop job vs phi, GPU decode agreement, trainer whole-run rate,
#    torchrun equality and resume), G14_S seconds;
# 3. benchmarks/d2_gpu_check.sh (issue 11: Mask R-CNN R50-FPN and R50-C4 finetunes on the built-in scenes,
#    APs and seconds per iteration), D2_ITERS iterations at D2_BATCH images, D2_S seconds;
# 4. one GPU calibration row of the built-in benchmark (issue 13): the CPU reference recipe of
#    params/cpu-full/17_benchmark.yaml (MoCo-v2 without RandomResizedCrop, queue 256) on the same 1,000
#    scenes v3 (CAL_VERSION) and probe as results/cpu-full/17_benchmark/calibration_scenes_v3_cpu.csv, CAL_EPOCHS
#    epochs (default 100) at batch 256, lr scaled linearly (the probe every 10 epochs, so a cut run still
#    leaves its numbers), with the time that is left.
set -uo pipefail
OUT=${1:?usage: gpu_session.sh OUT}
R=/tmp/gpu_session
rm -rf $R; mkdir -p $R "$OUT"
START=$(date +%s)
BUDGET_S=${BUDGET_S:-560}
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
# the logs and figures only (text files under 2 MB): checkpoints and crops would pass the 16-MiB limit of a file
pack() { cp $R/cal/trunks/*/train/metrics.jsonl $R/cal_metrics.jsonl 2>/dev/null
         (cd $R && find . -type f \( -name "*.log" -o -name "*.txt" -o -name "*.json" -o -name "*.jsonl" -o -name "*.csv" \) \
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

echo "=== issue 14 ($(date +%T), $(( $(date +%s) - START )) s in)"
WAIT_FOR=$R/d2_build.rc BUDGET_S=${G14_S:-300} bash benchmarks/gpu_check.sh $R/g14 2>&1 | tee $R/g14.log
wait

echo "=== issue 11 ($(date +%T), $(( $(date +%s) - START )) s in); build rc $(cat $R/d2_build.rc)"
tail -3 $R/d2_build.log
D2_SRC=.d2src ITERS=${D2_ITERS:-200} BATCH=${D2_BATCH:-8} D2_TIMEOUT=$(( ${D2_S:-170} / 2 )) \
    timeout ${D2_S:-170} bash benchmarks/d2_gpu_check.sh $R/d2 2>&1 | tee $R/d2.log
for f in $R/d2/*.log; do echo "--- $f"; grep -E "eta:|Average Precision|AP,|copypaste|Error|error" "$f" | tail -8; done

echo "=== issue 13 ($(date +%T), $(( $(date +%s) - START )) s in, $(left) s left)"
CAL='{"method": "moco_v2", "epochs": '${CAL_EPOCHS:-100}', "batch_size": 256, "lr": 1.2, "warmup_epochs": 2,
      "method_params": {"queue_size": 256, "random_resized_crop": false}, "workers": '${CAL_WORKERS:-12}', "threads": null,
      "train_params": {"monitor_every": 10}}'
(( $(left) > 40 )) && timeout $(( $(left) - 10 )) python3 -m coarsecrop.studies.benchmark_calibration \
    --name "MoCo-v2 no RRC, q256, on one GPU, batch 256, ${CAL_EPOCHS:-100} ep" --config "$CAL" \
    --version ${CAL_VERSION:-3} --images ${CAL_IMAGES:-1000} --out $R/cal --csv $R/calibration_gpu.csv 2>&1 | tail -15
grep -h '"kind": "monitor"' $R/cal/trunks/*/train/metrics.jsonl 2>/dev/null | cut -c1-400
echo "=== done in $(( $(date +%s) - START )) s"
