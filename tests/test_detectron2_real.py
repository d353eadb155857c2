"""`coarsecrop detectron2` against a real detectron2, whenever ``import detectron2`` works here (skipped
otherwise: detectron2 is not on PyPI; README, "detectron2", says how to build it against the installed
torch). On a CPU: export a random-init ResNet-50 -> 2 training iterations of Mask R-CNN R50-FPN on 96-px
built-in scenes -> COCO evaluation -> metrics.json with AP_bbox and AP_seg; then the same run resumed in
``--eval-only``; the C4 config in ``--eval-only`` with few proposals (C4 trains very slowly on a CPU); a
VOC root tested by two spawned processes (the data registered in each) with the VOC evaluator; the
transfer task's subprocess. 2 to 4 minutes on 2 CPU cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision

from coarsecrop.cli import main as cli_main
from coarsecrop.data.synthetic import write_scenes
from coarsecrop.data.synthetic_voc import write_voc
from coarsecrop.evaluate import d2

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not d2.available(), reason="detectron2 is not installed (not on PyPI; README: "
                                 "build it from its repository against the installed torch)")]

FEW = ["--opt", "DATALOADER.NUM_WORKERS", "0", "--opt", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
       "--opt", "MODEL.RPN.PRE_NMS_TOPK_TEST", "200"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("d2real")
    scenes = write_scenes(root / "scenes", num_images=24, seed=0, size=96, progress=False)
    scenes = root / "scenes"
    checkpoint = root / "r50.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), checkpoint)
    return {"root": root, "scenes": scenes, "checkpoint": checkpoint}


def _run(made, config: str, out: Path, *extra: str) -> dict:
    args = ["detectron2", str(made["checkpoint"]), "--backbone", "resnet50", "--config", config,
            "--out", str(out), *FEW, *extra]
    assert cli_main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def test_fpn_trains_two_iterations_and_ends_with_its_numbers(made):
    out = made["root"] / "fpn"
    record = _run(made, "coco_mask_rcnn_R_50_FPN_1x", out, "--scenes", str(made["scenes"]), "--ims-per-batch", "2",
                  "--opt", "SOLVER.MAX_ITER", "2")
    assert {"AP_bbox", "AP50_bbox", "AP_seg", "AP50_seg"} <= set(record["headline"])
    assert 0 <= record["headline"]["AP50_bbox"] <= 100 and record["max_iter"] == 2
    assert record["data"]["mask_format"] == "bitmask" and record["data"]["min_size"] == 96
    assert record["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert (out / "detectron2" / "model_final.pth").is_file() and (out / "detectron2" / "config.yaml").is_file()
    cfg = (out / "detectron2" / "config.yaml").read_text()
    assert "NUM_CLASSES: 12" in cfg and "MASK_FORMAT: bitmask" in cfg
    # resumed in --eval-only: OUT's last checkpoint tested, the same file written again
    again = _run(made, "coco_mask_rcnn_R_50_FPN_1x", out, "--scenes", str(made["scenes"]), "--eval-only", "--resume")
    assert again["eval_only"] is True and set(again["headline"]) == set(record["headline"])
    assert again["headline"]["AP50_bbox"] == pytest.approx(record["headline"]["AP50_bbox"], abs=1e-6)


def test_c4_tests_a_handful_of_images(made):
    record = _run(made, "coco_mask_rcnn_R_50_C4_1x", made["root"] / "c4", "--scenes", str(made["scenes"]),
                  "--eval-only")
    assert {"AP_bbox", "AP50_bbox", "AP_seg"} <= set(record["headline"]) and record["data"]["val_images"] > 0


def test_a_voc_root_in_two_spawned_processes(made):
    voc = write_voc(made["scenes"], made["root"] / "VOC2007")
    record = _run(made, "voc0712_faster_rcnn_R_50_C4_24k", made["root"] / "voc", "--scenes", str(voc), "--eval-only",
                  "--num-gpus", "2")
    assert record["world_size"] == 2 and record["data"]["evaluator"] == "pascal_voc"
    assert set(record["headline"]) == {"AP_bbox", "AP50_bbox", "AP75_bbox"}


def test_the_transfer_task_fills_a_table_with_the_real_engine(made):
    from coarsecrop.studies.transfer import evaluate_rows

    record = evaluate_rows("detectron2", {"random": None}, backbone="resnet50", scenes=made["scenes"], device="cpu",
                           params={"config": "coco_mask_rcnn_R_50_FPN_1x", "iterations": 2, "ims_per_batch": 2,
                                   "opts": ["DATALOADER.NUM_WORKERS", 0, "MODEL.RPN.POST_NMS_TOPK_TEST", 50]})
    assert record["engine"] == "detectron2" and record["headline"] == "AP_bbox"
    run = record["rows"]["random"]["runs"][0]
    assert {"AP_bbox", "AP_seg"} <= set(run) and run["seed"] == 0
