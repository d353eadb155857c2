#!/usr/bin/env bash
# The CUDA paths, checked in one run on a GPU machine (a lent H100 here; any CUDA machine elsewhere):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# 1. the CUDA unit tests (views on GPU tensors, device resolution);
# 2. the crop job with a ResNet-50 phi on cuda (GPU scoring + NMS) on 512 built-in scenes;
# 3. the trainer under torchrun on one GPU: NCCL process group, SyncBN, bf16 autocast, channels_last,
#    photometric steps on the GPU, checkpoint + --resume, kNN monitor; then ResNet-50 at 224 px, img/s as logged;
# 4. benchmarks/crop_speed.py on cuda and benchmarks/pretrain_speed.py's GPU section (ResNet-50 MoCo-v2 at
#    224 px with data loading; model-only img/s for MoCo-v2, BYOL, DenseCL and MAE ViT-B/16).
# Needs: torch with CUDA, torchvision, pycocotools, opencv, pyyaml, tqdm, pandas, pytest; PYTHONPATH=. is set here.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
W=$(mktemp -d)
step() { echo; echo "=== $* ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'bf16', torch.cuda.is_bf16_supported(), 'nccl', torch.cuda.nccl.version())"

step "1. CUDA unit tests"
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/test_views.py tests/test_crop_job.py tests/test_batch_photometric.py -k "cuda or device" 2>&1 | tail -4

step "4b. pretraining speed on cuda"
timeout 180 $PY benchmarks/pretrain_speed.py --gpu-only --gpu-batch 256 --gpu-steps 20 --workers 15 2>&1 | grep -v Warning | tee "$OUT/pretrain_speed.txt" | tail -14

step "2. crop job, ResNet-50 phi on cuda"
$PY -m coarsecrop scenes --out $W/scenes --num-images ${N_SCENES:-512} --size 256 --quiet
t0=$(date +%s.%N); $PY -m coarsecrop crops --scenes $W/scenes --split train --strategy ours_coarse \
    --backbone resnet50 --device ${DEVICE:-cuda} --batch-size 64 --workers 8 --out $W/crops --quiet | grep -E '"(done|boxes|images_per_s|setup_seconds|device)"'
echo "crop job wall $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s"

step "3. trainer under torchrun, one GPU (NCCL, SyncBN, bf16, channels_last), stop at step 20 then --resume"
cat > $W/run.yaml <<YAML
method: moco_v2
manifest: $W/crops
backbone: resnet18
image_size: 96
epochs: ${EPOCHS:-3}
batch_size: 128
workers: 6
device: ${DEVICE:-cuda}
monitor: knn
monitor_max_crops: 600
log_every: 5
progress: false
YAML
timeout 150 torchrun --standalone --nproc_per_node=1 -m coarsecrop pretrain --params $W/run.yaml out=$W/run stop_at_step=20 2>&1 | tail -6
timeout 150 torchrun --standalone --nproc_per_node=1 -m coarsecrop pretrain --params $W/run.yaml out=$W/run --resume 2>&1 | tail -6
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

step "3b. trainer at paper scale: ResNet-50 MoCo-v2, 224 px, batch 256, 15 workers, 40 steps (img/s as logged)"
timeout 200 torchrun --standalone --nproc_per_node=1 -m coarsecrop pretrain --params $W/run.yaml out=$W/r50 \
    backbone=resnet50 image_size=224 batch_size=256 workers=15 epochs=6 monitor=none log_every=5 stop_at_step=40 2>&1 | tail -3
$PY -c "
import json; l=[json.loads(x) for x in open('$W/r50/metrics.jsonl')]; s=[r for r in l if r.get('kind')=='step']
print('photometric_on', l[0]['resolved']['photometric_on'], '| images/s per logged window:', [round(r['images_per_s']) for r in s])"

step "4a. crop speed on cuda"
timeout 120 $PY benchmarks/crop_speed.py --devices cuda --no-baselines --num-images 128 --batch-size 32 --workers 8 2>&1 | tee "$OUT/crop_speed.txt" | tail -16

step "done"
