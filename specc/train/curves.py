"""Training curves: the loss and each metric per epoch, as a PNG (`curves.png` in a run directory).

matplotlib is imported only here, and only its object-oriented API with the non-interactive Agg canvas:
plotting never opens a window and never changes the pyplot backend of the process that calls it.
"""

from __future__ import annotations

import math
from pathlib import Path

from specc.core.artifacts import write_atomic


def plot_curves(history: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """One panel per quantity (the loss first), with its training and validation values per epoch;
    written atomically to `path`. A loss that spans more than a factor of 30 is drawn on a log scale."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [k for k in history if not k.startswith("val_")]
    names += [k[4:] for k in history if k.startswith("val_") and k[4:] not in names]
    names.sort(key=lambda k: (not k.endswith("loss"), k != "loss"))  # the total loss, other losses, metrics
    cols = min(3, max(1, len(names)))
    rows = math.ceil(len(names) / cols) or 1
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        for key, label in ((name, "training"), (f"val_{name}", "validation")):
            values = history.get(key)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
        shown = [v for k in (name, f"val_{name}") for v in history.get(k, []) if math.isfinite(v)]
        if name.endswith("loss") and shown and min(shown) > 0 and max(shown) / min(shown) > 30:
            ax.set_yscale("log")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
