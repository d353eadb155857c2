"""The crop study (coarsecrop.studies.crops, notebooks/01_crops.py) on parameters that leave a figure nothing
to draw: no strategy with an objectness map, no image that every strategy cropped."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from coarsecrop.studies import crops as cs  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_study_without_an_objectness_strategy_draws_what_it_has(tmp_path):
    """`strategies: [grid]` (no ours) made Fig. 4 call plt.subplots with 0 columns, after every crop job."""
    study = cs.run_study(cs.CropStudyParams(num_images=3, image_size=64, strategies=["grid"], n=3, device="cpu",
                                            workers=0, out=str(tmp_path / "run")))
    grid = cs.plot_crops_grid(study)
    assert len(grid.axes) == 3  # one strategy, three scenes
    maps = cs.plot_objectness_maps(study)
    assert [t.get_text() for ax in maps.axes for t in ax.texts] == [
        "no strategy of this run scores an objectness map (ours and its variants do)"]
    plt.close("all")
