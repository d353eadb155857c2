"""The built-in benchmark, measured (notebooks/17_benchmark.py): can an object's class be read from its
colour alone or from its shape alone (``coarsecrop.data.gates``), and how do the scenes' objects compare
with VOC's and COCO's (the share of object pixels in a whole image, the object sizes)?

    result = run_benchmark(BenchmarkParams(num_images=300, scene_size=128, seed=3, versions=[1, 2]))

For each generator version: scenes written into the run folder, both probes (5-fold cross-validated
logistic regression) and chance, the gates (colour-only at most 10 points above chance, shape-only at
least 80%), Image-Crop's objectness (mean share of object pixels per image: the paper's Table 2 gives 36.4%
on VOC07) and the distribution of object sizes (square root of the visible area over the image side).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from coarsecrop.data.gates import COLOUR_MARGIN, SHAPE_FLOOR, measure_gates
from coarsecrop.data.scenes import open_scenes
from coarsecrop.data.synthetic import GENERATOR_VERSIONS, write_scenes
from coarsecrop.io import write_json
from coarsecrop.params import default_run_dir
from coarsecrop.studies.reference import paper_objectness

SMALL = 0.1  # an object under this share of the image side counts as small here


@dataclass
class BenchmarkParams:
    """The parameters of notebooks/17_benchmark.py (its ``parameters`` cell mirrors these defaults)."""

    num_images: int = 300
    scene_size: int = 128
    seed: int = 3
    versions: list[int] = field(default_factory=lambda: [1, 2])
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
    write_json(run_dir / "metrics.json", result)
    return result


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
