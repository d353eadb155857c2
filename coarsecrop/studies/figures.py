"""Figures of the notebooks and the book: one way to save and show them."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt


def save_figure(fig: plt.Figure, folder: str | Path | None, name: str, dpi: int = 110):
    """Render ``fig`` once as PNG, close it (so the notebook does not show it a second time), write it to
    folder/<name>.png when ``folder`` is given (created if needed), and return it as an IPython PNG image,
    for display and myst-nb glue (the same bytes whatever the matplotlib backend)."""
    from IPython.display import Image  # IPython: the book extra (optional dependency)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    png = buffer.getvalue()
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.png").write_bytes(png)
    return Image(data=png, format="png")
