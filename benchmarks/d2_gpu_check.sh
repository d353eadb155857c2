#!/usr/bin/env bash
# coarsecrop detectron2 on a GPU machine, in one run (issue 11's GPU check): a few hundred iterations of
# Mask R-CNN R50-FPN and R50-C4 on built-in scenes, then their APs and seconds per iteration.
#   D2_SRC=path/to/detectron2-source bash benchmarks/d2_gpu_check.sh [OUT_DIR]
# D2_SRC: a detectron2 source tree (its repository, cloned elsewhere; never committed here). Its C++ ops
# are built in place for the CPU (about a minute; CUDA_VISIBLE_DEVICES= keeps the CUDA build out): the
# shipped configs run on the GPU through torchvision's ops. Its runtime dependencies (fvcore, iopath, yacs,
# termcolor, omegaconf, tabulate, cloudpickle) and pycocotools must be importable (e.g. carried wheels).
# ITERS (default 300), BATCH (images per iteration, default 16), N_SCENES (default 600), SIZE (default 256) size
# the runs (about 5 minutes on an H200 at the defaults); D2_TIMEOUT (default 420) bounds each config's run.
# CONFIGS (default: both) names the configs to run.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/d2_gpu_check}}
mkdir -p "$OUT"
PY=${PY:-python3}
ITERS=${ITERS:-300}
: "${D2_SRC:?set D2_SRC to a detectron2 source tree}"
W=$(mktemp -d)
step() { echo; echo "=== $* ($(date +%T))"; }

step "build detectron2's CPU ops in $D2_SRC (skipped when built)"
if ! ls "$D2_SRC"/detectron2/_C*.so >/dev/null 2>&1; then
    (cd "$D2_SRC" && CUDA_VISIBLE_DEVICES= $PY setup.py build_ext --inplace > "$OUT/d2_build.log" 2>&1) \
        || { tail -20 "$OUT/d2_build.log"; exit 1; }
fi
export PYTHONPATH=$PWD:$D2_SRC${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
$PY -c "import detectron2, torch; print('detectron2', detectron2.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"

step "scenes and a random-init ResNet-50"
$PY -m coarsecrop scenes --out $W/scenes --num-images ${N_SCENES:-600} --size ${SIZE:-256} --quiet
$PY -c "import torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.resnet50().state_dict(), '$W/r50.pt')"

for config in ${CONFIGS:-coco_mask_rcnn_R_50_FPN_1x coco_mask_rcnn_R_50_C4_1x}; do
    step "$config, $ITERS iterations, batch ${BATCH:-16}"
    timeout ${D2_TIMEOUT:-420} $PY -m coarsecrop detectron2 $W/r50.pt --backbone resnet50 --config $config --scenes $W/scenes \
        --out $W/$config --opt SOLVER.MAX_ITER $ITERS --opt SOLVER.WARMUP_ITERS 50 --ims-per-batch ${BATCH:-16} > "$OUT/$config.log" 2>&1
    echo "exit $?"
    $PY - "$W/$config/metrics.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
h = r["headline"]
print({k: round(v, 1) for k, v in h.items() if k in ("AP_bbox", "AP50_bbox", "AP_seg", "AP50_seg")},
      "s/it", r["seconds_per_iter"], "wall", r["wall_time_s"], "s, device", r["device"], "sizes", r["data"]["min_size"])
PYEOF
    cp "$W/$config/metrics.json" "$OUT/$config.metrics.json" 2>/dev/null
done
step "done"
