"""The built-in benchmark, measured (notebooks/17_benchmark.py): can an object's class be read from its
colour alone or from its shape alone (``coarsecrop.data.gates``), and how do the scenes' objects compare
with VOC's and COCO's (the share of object pixels in a whole image, the object sizes)?

    result = run_benchmark(BenchmarkParams(num_images=300, scene_size=128, seed=3, versions=[1, 2]))

For each generator version: scenes written into the run folder, both probes (5-fold cross-validated
logistic regression) and chance, the gates (colour-only at most 10 points above chance, shape-only at
least 80%), Image-Crop's objectness (mean share of object pixels per image: the paper's Table 2 gives 36.4%
on VOC07) and the distribution of object sizes (square root of the visible area over the image side).

The trunk rows (``trunk_rows``, when ``trunk_version`` is set): the object probe (``coarsecrop.train.monitor.
ObjectProbe``, the trainer's MONITOR protocol: kNN and L-BFGS linear on frozen features of the train split's
GT object crops, top-1 on the val split's) of one trunk architecture at ``image_size`` px, trained four ways
on the scenes of generator ``trunk_version``:

- random init (as built, and with its BN statistics re-estimated on the train crops);
- supervised, the ceiling: trained with the labels on the train split's GT object crops
  (``coarsecrop.train.supervised``);
- SSL on GT-Crop, one row per entry of ``ssl`` (the pretraining path of notebooks/02_pretrain.py: GT crop
  job, the trainer subprocess, its final monitor line); the first entry is the reference budget.

The gate: the reference SSL row's linear probe at least ``TRUNK_MARGIN`` above the random init's.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from coarsecrop import ssl
from coarsecrop.data.gates import COLOUR_MARGIN, SHAPE_FLOOR, measure_gates
from coarsecrop.data.scenes import open_scenes
from coarsecrop.data.synthetic import GENERATOR_VERSIONS, write_scenes
from coarsecrop.device import resolve_device
from coarsecrop.io import write_json
from coarsecrop.params import default_run_dir, project_root
from coarsecrop.studies import pretrain as ps
from coarsecrop.studies.reference import paper_objectness
from coarsecrop.train.monitor import ObjectProbe
from coarsecrop.train.supervised import train_supervised

SMALL = 0.1  # an object under this share of the image side counts as small here
TRUNK_MARGIN = 0.10  # the trunk gate: reference GT-Crop SSL linear probe >= random init + 10 points
PROBES = ("knn", "linear")


def _cpu_full_moco() -> dict:
    """The MoCo-v2 defaults of PretrainStudyParams: the 6-epoch recipe of the first cpu-full results (now
    params/cpu-full-v1/02_pretrain.yaml); the calibrated v3 recipe of params/cpu-full/ is a row of its own."""
    d = ps.PretrainStudyParams()
    return {"method": d.method, "epochs": d.epochs, "batch_size": d.batch_size, "lr": d.lr,
            "warmup_epochs": d.warmup_epochs, "method_params": dict(d.method_params)}


@dataclass
class BenchmarkParams:
    """The parameters of notebooks/17_benchmark.py (its ``parameters`` cell mirrors these defaults)."""

    num_images: int = 300
    scene_size: int = 128
    seed: int = 3
    versions: list[int] = field(default_factory=lambda: [1, 2, 3])
    # trunk rows: None = none; else the scenes' generator version (trunk_images scenes, seed ``seed``)
    trunk_version: int | None = None
    trunk_images: int = 1000
    backbone: str = "resnet10_w16_cifar"
    image_size: int = 32  # view side of the SSL runs = side of the probe's and the supervised loop's crops
    trunk_seed: int = 0  # weights, data order, augmentations of every trunk row
    supervised: dict = field(default_factory=lambda: {"epochs": 12, "lr": 0.1, "batch_size": 64})
    # SSL rows on GT-Crop: name -> PretrainStudyParams fields (method, epochs, lr, method_params, n, ...);
    # the first is the reference budget of the gate
    ssl: dict = field(default_factory=lambda: {"MoCo-v2, cpu-full-v1 settings (6 epochs)": _cpu_full_moco()})
    device: str = "auto"
    out: str | None = None  # run folder; None = runs/17_benchmark/<hash of the parameters>
    preset: str = ""


def _objects(scene_dir: Path) -> tuple[list[float], list[float]]:
    """(object share of each image, sqrt(visible area) / image side of each object)."""
    shares, sizes = [], []
    for scene in open_scenes(scene_dir).scenes:
        masks = scene.instance_masks()
        shares.append(float(scene.object_mask().mean()))
        side = max(scene.width, scene.height)
        sizes += [float(np.sqrt(m.sum())) / side for m in masks]
    return shares, sizes


def run_benchmark(p: BenchmarkParams) -> dict:
    """Scenes of every version in ``p.versions``, measured; the record is also run_dir/metrics.json."""
    bad = [v for v in p.versions if v not in GENERATOR_VERSIONS]
    if bad or not p.versions:
        raise ValueError(f"versions must be a non-empty list of {GENERATOR_VERSIONS}, got {p.versions}")
    if p.num_images < 20 or p.scene_size < 32:
        raise ValueError(f"num_images must be >= 20 and scene_size >= 32, got {p.num_images}, {p.scene_size}")
    if p.trunk_version is not None and (p.trunk_version not in GENERATOR_VERSIONS or not p.ssl
                                        or p.trunk_images < 20):
        raise ValueError(f"trunk_version must be None or one of {GENERATOR_VERSIONS} with trunk_images >= 20 "
                         f"and at least one ssl row, got {p.trunk_version}, {p.trunk_images}, {p.ssl}")
    run_dir = Path(p.out) if p.out else default_run_dir("17_benchmark", p)
    rows, sizes = [], {}
    for version in p.versions:
        folder = run_dir / f"scenes-v{version}"
        if not (folder / "annotations.json").is_file():
            write_scenes(folder, num_images=p.num_images, seed=p.seed, size=p.scene_size, progress=False,
                         version=version)
        gates = measure_gates(folder)
        shares, sizes[version] = _objects(folder)
        rows.append({"version": version, **gates, "image_objectness": float(np.mean(shares)),
                     "objects_per_image": gates["objects"] / p.num_images,
                     "median_size": float(np.median(sizes[version])),
                     "small_share": float(np.mean(np.array(sizes[version]) < SMALL))})
    result = {"notebook": "17_benchmark", "params": dataclasses.asdict(p), "run_dir": str(run_dir),
              "versions": rows, "sizes": {str(v): s for v, s in sizes.items()},
              "gates": {"colour_margin": COLOUR_MARGIN, "shape_floor": SHAPE_FLOOR}}
    if p.trunk_version is not None:
        result["trunks"] = trunk_rows(p, run_dir)
    write_json(run_dir / "metrics.json", result)
    return result


# ---------------------------------------------------------------- trunk rows

def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def trunk_scenes(p: BenchmarkParams, run_dir: Path) -> Path:
    """The trunk rows' scenes: the gates' folder when it is the same set, else run_dir/trunks/scenes."""
    if p.trunk_images == p.num_images and p.trunk_version in p.versions:
        folder = run_dir / f"scenes-v{p.trunk_version}"
    else:
        folder = run_dir / "trunks" / f"scenes-v{p.trunk_version}-{p.trunk_images}"
    if not (folder / "annotations.json").is_file():
        write_scenes(folder, num_images=p.trunk_images, seed=p.seed, size=p.scene_size, progress=False,
                     version=p.trunk_version)
    return folder


def ssl_study_params(p: BenchmarkParams, scenes: Path, out: Path, config: dict) -> ps.PretrainStudyParams:
    """The PretrainStudyParams of one SSL row: GT-Crop of ``scenes``, this benchmark's trunk, view size,
    seed and device, the probe on both classifiers; ``config`` sets the rest (method, epochs, lr, ...;
    method_params default to none given, i.e. the method's own defaults)."""
    fixed = {"scenes", "strategy", "backbone", "image_size", "seed", "monitor", "out", "device"}
    clash = sorted(fixed & set(config))
    if clash:
        raise ValueError(f"an ssl row may not set {clash}: the benchmark sets them for every row")
    known = {f.name for f in dataclasses.fields(ps.PretrainStudyParams)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown ssl row key(s) {unknown}; valid: {', '.join(sorted(known - fixed))}")
    return ps.PretrainStudyParams(scenes=str(scenes), strategy="gt", backbone=p.backbone, image_size=p.image_size,
                                  seed=p.trunk_seed, monitor="both", out=str(out), device=p.device,
                                  preset=p.preset, **{"method_params": {}, **config})


def ssl_row(p: BenchmarkParams, scenes: Path, out: Path, name: str, config: dict, min_side: float = 0) -> dict:
    """One SSL row: GT crop job, the trainer subprocess (resumed or skipped when done), its final probe.
    min_side > 0: the probe reads only objects of at least that many pixels (the trainer's
    ``monitor_min_side``); the pretraining still trains on every GT crop."""
    if min_side:
        config = {**config, "train_params": {**config.get("train_params", {}), "monitor_min_side": min_side}}
    sp = ssl_study_params(p, scenes, out, config)
    out.mkdir(parents=True, exist_ok=True)
    manifest = ps.prepare_manifest(sp, scenes, out)
    train = ps.trainer_params(sp, manifest, out)
    t0 = time.perf_counter()
    wall = ps.launch(sp, train, out)
    metrics = ps.summary_metrics(Path(train.out), wall)
    if "probe_linear_top1" not in metrics:
        raise RuntimeError(f"{train.out}: the run wrote no object-probe line (monitor=both was asked)")
    return {"trunk": name, "kind": "ssl", "linear_top1": metrics["probe_linear_top1"],
            "knn_top1": metrics["probe_knn_top1"], "steps": metrics["steps"], "epochs": sp.epochs,
            "final_loss": metrics["final_loss"], "first_loss": metrics["first_loss"],
            **{k: metrics.get(k) for k in ("init_linear_top1", "init_knn_top1", "init_bn_linear_top1")},
            "wall_s": round(time.perf_counter() - t0, 1), "train_wall_s": metrics["train_wall_s"],
            "config": config, "run": str(out)}


def baseline_rows(p: BenchmarkParams, scenes: Path, min_side: float = 0) -> tuple[list[dict], list[int]]:
    """The random-init rows (as built; BN statistics re-estimated on the train crops) and the supervised
    ceiling, all probed on ``scenes``; also the probe's (train, val) object-crop counts. min_side > 0: the
    probe, and so the supervised training set, holds only objects of at least that many pixels (sqrt of the
    GT box area)."""
    device = resolve_device(p.device)
    probe = ObjectProbe(str(scenes), PROBES, size=p.image_size, device=device, seed=0, min_side=min_side)
    method = next(iter(p.ssl.values()), {}).get("method", ps.PretrainStudyParams.method)
    rows = []
    # random init: the trunk the reference SSL run starts from (the trainer's own init rule)
    t0 = time.perf_counter()
    trunk = ssl.build_method(method, p.backbone, p.image_size, seed=p.trunk_seed).backbone.to(device)
    rows.append({"trunk": "random init", "kind": "init", **probe.score(trunk),
                 "wall_s": round(time.perf_counter() - t0, 1)})
    t0 = time.perf_counter()
    rows.append({"trunk": "random init, BN statistics of the data", "kind": "init_bn",
                 **probe.score_recalibrated(trunk), "wall_s": round(time.perf_counter() - t0, 1)})
    # supervised ceiling: a fresh trunk of the same init, trained with labels on the train crops
    t0 = time.perf_counter()
    trunk = ssl.build_method(method, p.backbone, p.image_size, seed=p.trunk_seed).backbone
    trunk, history = train_supervised(trunk, probe.train_x, probe.train_y, seed=p.trunk_seed, device=device,
                                      **p.supervised)
    rows.append({"trunk": "supervised (labels, the ceiling)", "kind": "supervised", **probe.score(trunk),
                 "epochs": p.supervised.get("epochs"), "history": history,
                 "wall_s": round(time.perf_counter() - t0, 1)})
    return rows, [len(probe.train_x), len(probe.val_x)]


def trunk_rows(p: BenchmarkParams, run_dir: Path) -> dict:
    """The object probe of random-init, supervised and SSL (GT-Crop) trunks on the same scenes, and the
    gate computed from them. Returns {"scenes", "version", "objects" (train, val crops), "rows", "gate"}."""
    scenes = trunk_scenes(p, run_dir)
    rows, objects = baseline_rows(p, scenes)
    for name, config in p.ssl.items():
        rows.append(ssl_row(p, scenes, run_dir / "trunks" / _slug(name), name, dict(config)))
    return {"scenes": str(scenes), "version": p.trunk_version, "objects": objects, "rows": rows,
            "gate": trunk_gate(rows, next(iter(p.ssl)))}


def trunk_gate(rows: list[dict], reference: str) -> dict:
    """The gate from the rows: the reference SSL row's linear probe >= random init's + TRUNK_MARGIN."""
    by_name = {r["trunk"]: r for r in rows}
    init = next(r for r in rows if r["kind"] == "init")
    ssl_value = by_name[reference]["linear_top1"]
    return {"reference": reference, "ssl_linear": ssl_value, "init_linear": init["linear_top1"],
            "margin": TRUNK_MARGIN, "gain": ssl_value - init["linear_top1"],
            "passes": bool(ssl_value >= init["linear_top1"] + TRUNK_MARGIN)}


def trunks_table(result: dict) -> pd.DataFrame:
    """One line per trunk: linear and kNN probe (percent), gain over random init, steps, wall time."""
    trunks = result["trunks"]
    init = next(r for r in trunks["rows"] if r["kind"] == "init")
    lines = [{"trunk": r["trunk"], "linear probe": f"{100 * r['linear_top1']:.1f}",
              "kNN probe": f"{100 * r['knn_top1']:.1f}",
              "linear vs random init": f"{100 * (r['linear_top1'] - init['linear_top1']):+.1f}",
              "epochs": r.get("epochs") or "–", "SSL steps": r.get("steps") or "–",
              "wall (s)": f"{r['wall_s']:.0f}"} for r in trunks["rows"]]
    return pd.DataFrame(lines).set_index("trunk").astype(object)


def plot_trunks(result: dict) -> plt.Figure:
    """Bars: linear and kNN object probe per trunk; a dashed line at random init + TRUNK_MARGIN."""
    trunks = result["trunks"]
    rows = trunks["rows"]
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.55 * len(rows)))
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [100 * r["linear_top1"] for r in rows], height=0.4, label="linear probe")
    ax.barh(y + 0.2, [100 * r["knn_top1"] for r in rows], height=0.4, label="kNN probe")
    ax.axvline(100 * (trunks["gate"]["init_linear"] + TRUNK_MARGIN), color="grey", linestyle="--", linewidth=1,
               label=f"gate: random init (linear) + {100 * TRUNK_MARGIN:.0f} points")
    ax.set_yticks(y, [r["trunk"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"top-1 (%) on the val objects of scenes v{trunks['version']}")
    ax.legend(frameon=False, fontsize=8, loc="lower center", bbox_to_anchor=(0.4, 1.0), ncol=3)
    fig.tight_layout()
    return fig


def gates_table(result: dict) -> pd.DataFrame:
    """One line per version: the probes, chance, the gates' verdicts, Image-Crop objectness, sizes."""
    paper = paper_objectness()
    lines = [{"scenes": f"v{r['version']}", "objects": r["objects"], "chance": f"{100 * r['chance']:.1f}",
              "colour-only": f"{100 * r['colour_only']:.1f}", "shape-only": f"{100 * r['shape_only']:.1f}",
              "colour gate": "passes" if r["colour_gate"] else "fails",
              "shape gate": "passes" if r["shape_gate"] else "fails",
              "Image-Crop objectness": f"{100 * r['image_objectness']:.1f}",
              "objects / image": f"{r['objects_per_image']:.1f}", "median size": f"{r['median_size']:.3f}",
              f"share < {SMALL}": f"{100 * r['small_share']:.0f}%"} for r in result["versions"]]
    lines.append({"scenes": "paper, VOC07 (Table 2)", "Image-Crop objectness": f"{paper['image']:.1f}"})
    return pd.DataFrame(lines).set_index("scenes").astype(object).fillna("–")


def plot_sizes(result: dict) -> plt.Figure:
    """Histogram of object sizes per version (log scale of sqrt(area) / side)."""
    fig, ax = plt.subplots(figsize=(6.0, 3.2))
    bins = np.logspace(np.log10(0.01), np.log10(1.0), 30)
    for version, sizes in result["sizes"].items():
        ax.hist(sizes, bins=bins, histtype="step", linewidth=1.6, density=True, label=f"scenes v{version}")
    ax.set_xscale("log")
    ax.axvline(SMALL, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("object size: sqrt(visible area) / image side")
    ax.set_ylabel("density")
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- the committed calibration

# written by coarsecrop.studies.benchmark_calibration; a committed source of the cpu-full preset
# the committed calibration of the CPU pretraining, one CSV per scenes version (v2: why v3 exists; v3: the
# trunk rows' scenes)
CALIBRATIONS = {2: "results/cpu-full/17_benchmark/calibration_scenes_v2_cpu.csv",
                3: "results/cpu-full/17_benchmark/calibration_scenes_v3_cpu.csv"}
MIN_SIDE_NOTE = "; probe: objects >= {:g} px"  # appended to a row's scenes column when its probe filters sizes


def scenes_note(version: int, images: int, size: int, seed: int, min_side: float = 0) -> str:
    """The scenes column of a calibration row: 'scenes v2: 1000 x 128 px, seed 3' (+ MIN_SIDE_NOTE)."""
    return f"scenes v{version}: {images} x {size} px, seed {seed}" + (MIN_SIDE_NOTE.format(min_side) if min_side else "")


def row_min_side(scenes: str) -> float:
    """The probe's minimum object side recorded in a scenes column (0 = every object)."""
    match = re.search(re.escape(MIN_SIDE_NOTE.split("{")[0]) + r"([0-9.]+) px", str(scenes))
    return float(match.group(1)) if match else 0.0


def read_calibration(path: str | Path | None = None, min_side: float | None = 0, version: int = 3
                     ) -> tuple[str, pd.DataFrame]:
    """(the CSV's comment line: commit and machine, its rows) of the committed calibration on scenes
    ``version`` (or the CSV at ``path``): the rows whose probe read objects of at least ``min_side`` px (0:
    every object, the benchmark's own probe; None: all rows)."""
    path = Path(path) if path else project_root() / CALIBRATIONS[version]
    lines = path.read_text(encoding="utf-8").splitlines()
    comment = " ".join(line.lstrip("# ") for line in lines if line.startswith("#"))
    rows = pd.read_csv(path, comment="#")
    if min_side is not None and "scenes" in rows:
        rows = rows[rows["scenes"].map(row_min_side) == min_side].reset_index(drop=True)
    return comment, rows


def calibration_verdict(rows: pd.DataFrame, method: str | None = None) -> dict:
    """From the calibration rows: the random init's linear probe (the baseline row), the best SSL row
    (of ``method`` only, e.g. "byol", when given: the ``method`` of the row's config), its gain, the worst
    row's gain, and whether any SSL configuration reached random init + TRUNK_MARGIN."""
    init = rows[rows["kind"] == "init"]
    ssl_rows = rows[rows["kind"] == "ssl"]
    if method is not None:
        ssl_rows = ssl_rows[[json.loads(c or "{}").get("method") == method for c in ssl_rows["config"].fillna("")]]
    if init.empty or ssl_rows.empty:
        raise ValueError(f"the calibration needs a random-init row and at least one SSL row"
                         f"{f' of {method}' if method else ''}")
    base = float(init["linear_top1"].iloc[-1])
    best = ssl_rows.loc[ssl_rows["linear_top1"].idxmax()]
    return {"init_linear": base, "best": str(best["name"]), "best_linear": float(best["linear_top1"]),
            "gain": float(best["linear_top1"]) - base, "worst_gain": float(ssl_rows["linear_top1"].min()) - base,
            "tried": int(len(ssl_rows)),
            "passes": bool(float(best["linear_top1"]) >= base + TRUNK_MARGIN)}


def calibration_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The calibration rows for the chapter: probes in percent, gain over random init, steps, wall time."""
    init = float(rows[rows["kind"] == "init"]["linear_top1"].iloc[-1])
    table = pd.DataFrame({
        "configuration": rows["name"].fillna(rows["kind"]),
        "linear probe": (100 * rows["linear_top1"]).map("{:.1f}".format),
        "kNN probe": (100 * rows["knn_top1"]).map("{:.1f}".format),
        "linear vs random init": (100 * (rows["linear_top1"] - init)).map("{:+.1f}".format),
        "steps": rows["steps"].map(lambda v: "–" if pd.isna(v) else f"{int(v)}"),
        "wall (s)": rows["wall_s"].map("{:.0f}".format)})
    return table.set_index("configuration")
