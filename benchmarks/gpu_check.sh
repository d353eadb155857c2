#!/usr/bin/env bash
# Every GPU check and benchmark of issue 14 (and the CUDA paths before it), in one run of at most
# BUDGET_S seconds (default 470: within 8 minutes on one H200; any CUDA machine elsewhere):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the CUDA unit tests (views on GPU tensors, device resolution, nvJPEG decoding vs PIL, EXIF on the device);
# 2. benchmarks/crop_speed.py on cuda: 4000 COCO-like images, ResNet-50 and -18, ours and ours_coarse:
#    whole job / pure phi (target >= 0.85), decode path counts, GPU- vs CPU-decoded boxes (target >= 99 %),
#    where the time goes (the strategy's synced steps, the job's stages from timing.jsonl), nvJPEG vs CPU maps;
# 3. the crop job under torchrun: two processes on one GPU write the same manifest as one process (diff);
# 4. the trainer: benchmarks/pretrain_speed.py's GPU section (ResNet-50 MoCo-v2 at 224 px, model only and with
#    data loading; METHODS="moco_v2 byol densecl mae" adds the model-only table), and its whole-run rate;
# 5. the trainer under torchrun on one GPU: NCCL process group, SyncBN, bf16 autocast, channels_last,
#    photometric steps on the GPU, checkpoint + --resume, kNN monitor.
# Steps run in the order of what the targets need: 1, 2, 4b, 3, 5, 4a.
# WAIT_FOR=FILE: wait (at most 120 s) for FILE before step 2, so that a background build leaves the CPUs to it.
# Each step runs under `timeout` (its own limit, cut to what is left of BUDGET_S), so one hang costs one step.
# DEV=cpu dry-runs every step's code on the CPU at toy sizes (N_IMAGES, N_SCENES small): no figure is a target.
# Needs: torch with CUDA, torchvision, pycocotools, opencv, pyyaml, tqdm, pandas, pytest; PYTHONPATH=. is set here.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEV=${DEV:-cuda}
W=$(mktemp -d)
BUDGET_S=${BUDGET_S:-470}
START=$(date +%s)
exec 3>&2  # run's own notes go here, past any grep a step pipes through
step() { echo; echo "=== $* ($(date +%T), $(( $(date +%s) - START )) s in)"; }
# run LIMIT CMD...: CMD under timeout, the limit cut to the budget left (a step with < 10 s left is skipped)
run() {
    local limit=$1 left; shift
    left=$(( BUDGET_S - ($(date +%s) - START) ))
    if (( left < 10 )); then echo "SKIPPED (budget of $BUDGET_S s spent): $*" >&3; return 124; fi
    (( left < limit )) && limit=$left
    timeout --kill-after=10 "$limit" "$@"
    local rc=$?
    (( rc == 124 || rc == 137 )) && echo "TIMED OUT after $limit s: $*" >&3
    return $rc
}

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi (DEV=$DEV)"
$PY -c "import torch, torchvision; c = torch.cuda.is_available(); print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'bf16', c and torch.cuda.is_bf16_supported(), 'nccl', c and torch.cuda.nccl.version())"

step "1. CUDA unit tests"
run 90 $PY -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning tests/test_decode.py \
    tests/test_views.py tests/test_crop_job.py tests/test_batch_photometric.py -k "cuda or device or decode or nvjpeg or exif" 2>&1 | tail -6

if [[ -n ${WAIT_FOR:-} ]]; then  # a background build (e.g. detectron2's ops) must not share the CPUs with a benchmark
    for _ in $(seq 120); do [[ -e $WAIT_FOR ]] && break; sleep 1; done; echo "waited for $WAIT_FOR until $(( $(date +%s) - START )) s in"
fi

step "2. crop speed on cuda: whole job vs pure phi, decode gpu vs cpu (targets: ratio >= 0.85, agreement >= 99 %)"
run 200 $PY -W ignore::DeprecationWarning benchmarks/crop_speed.py --device $DEV --num-images ${N_IMAGES:-4000} --backbones ${BACKBONES:-resnet50,resnet18} \
    --batch-size 64 --json "$OUT/crop_speed.json" 2>&1 | tee "$OUT/crop_speed.txt" | tail -50

step "4b. trainer: whole-run rate vs model-only rate (ResNet-50 MoCo-v2, 224 px, batch 256, 6 epochs of 10 steps)"
run 120 $PY benchmarks/pretrain_speed.py --whole-run --run-device $DEV --workers ${WORKERS:-15} 2>&1 \
    | grep -v Warning | tee "$OUT/pretrain_whole_run.txt" | tail -11

step "3. crop job: one process, then torchrun with two processes on one GPU; the manifests must be equal"
$PY -m coarsecrop scenes --out $W/scenes --num-images ${N_SCENES:-512} --size 256 --quiet
CROPS=(--scenes $W/scenes --split train --strategy ours_coarse --backbone ${CROP_BACKBONE:-resnet50} --device $DEV --decode auto
       --batch-size 64 --shard-size 64 --quiet)
t0=$(date +%s.%N)
run 60 $PY -W ignore::DeprecationWarning -m coarsecrop crops "${CROPS[@]}" --workers 8 --out $W/crops 2>&1 \
    | tee "$OUT/crops_one_process.txt" | grep -E '"(done|skipped|boxes|images_per_s|setup_seconds|device|decode|gpu|cpu|bad)"'
echo "one process: wall $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s"
t0=$(date +%s.%N)
run 90 $PY -m torch.distributed.run --standalone --nproc_per_node=2 -m coarsecrop crops "${CROPS[@]}" --workers 4 --out $W/crops2 \
    2>&1 | tee "$OUT/crops_two_processes.txt" | grep -E '"(rank|shards_written|images_per_s|decode)"'
echo "two processes: wall $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s"
if diff -r -x timing.jsonl $W/crops $W/crops2 >/dev/null && cmp $W/crops/manifest.json $W/crops2/manifest.json; then
    echo "PASS  two-process manifest == one-process manifest (every file but timing.jsonl)"
else
    echo "FAIL  two-process manifest differs from the one-process one (logs: $OUT/crops_*.txt):"
    diff -rq -x timing.jsonl $W/crops $W/crops2 2>&1 | head -5
fi

step "5. trainer under torchrun, one GPU (NCCL, SyncBN, bf16, channels_last), stop at step 20 then --resume"
cat > $W/run.yaml <<YAML
method: moco_v2
manifest: $W/crops
backbone: resnet18
image_size: 96
epochs: ${EPOCHS:-3}
batch_size: ${T_BATCH:-128}
workers: 6
device: $DEV
monitor: knn
monitor_max_crops: 600
log_every: 5
progress: false
YAML
run 90 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m coarsecrop pretrain --params $W/run.yaml out=$W/run stop_at_step=20 2>&1 | tail -6
run 90 $PY -m torch.distributed.run --standalone --nproc_per_node=1 -m coarsecrop pretrain --params $W/run.yaml out=$W/run --resume 2>&1 | tail -6
$PY - "$W/run" <<'PYEOF'
import json, sys, torch
lines = [json.loads(x) for x in open(sys.argv[1] + "/metrics.jsonl")]
start = next(l for l in lines if "resolved" in l)
r = start["resolved"]
print("resolved: device", r["device"], "backend", r["backend"], "world", r["world_size"], "batch", r["global_batch"],
      "sync_bn", start.get("sync_bn"), "channels_last", start.get("channels_last"), "bf16", start.get("bf16_autocast"))
steps = [l for l in lines if l.get("kind") == "step"] or [l for l in lines if "loss" in l]
print("loss first/last:", steps[0].get("loss"), steps[-1].get("loss"), "steps logged", len(steps))
for l in lines:
    if l.get("kind") in ("monitor", "epoch", "end"):
        print({k: v for k, v in l.items() if k not in ("weights_sha256",)})
ck = torch.load(sys.argv[1] + "/checkpoint.pt", map_location="cpu", weights_only=True)
print("checkpoint step", ck["step"], "of", ck["resolved"]["total_steps"])
PYEOF
cp $W/run/metrics.jsonl "$OUT/train_metrics.jsonl" 2>/dev/null

step "4a. trainer: pretraining speed on cuda (model only, and MoCo-v2 with data loading)"
run 90 $PY benchmarks/pretrain_speed.py --gpu-only --gpu-device $DEV --gpu-batch ${GPU_BATCH:-256} --gpu-steps 20 --workers ${WORKERS:-15} \
    --gpu-methods ${METHODS:-} 2>&1 \
    | grep -v Warning | tee "$OUT/pretrain_speed.txt" | tail -14

step "done in $(( $(date +%s) - START )) s (budget $BUDGET_S s); figures under $OUT"
