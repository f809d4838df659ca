"""What a training run shows as it goes: a per-epoch CSV log and a loss / validation-DSC curve."""

import csv
from pathlib import Path
from typing import Dict, Sequence

from ..files.output_files import atomic_output

COLUMNS = ["epoch", "train_loss", "val_loss", "val_dsc", "seconds"]


def write_history(path: Path, history: Sequence[Dict[str, float]]) -> None:
    """The whole history as CSV (epoch 0 is the starting model, before any update)."""
    with atomic_output(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def plot_history(path: Path, history: Sequence[Dict[str, float]]) -> None:
    """Training and validation loss (left) and validation DSC (right) per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, dsc_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    trained = [row for row in history if row["epoch"] > 0]
    loss_axes.plot([row["epoch"] for row in trained], [row["train_loss"] for row in trained], "o-", label="training")
    loss_axes.plot(epochs, [row["val_loss"] for row in history], "s-", label="validation")
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("Dice + BCE loss")
    loss_axes.legend()
    dsc_axes.plot(epochs, [row["val_dsc"] for row in history], "s-", color="tab:green")
    dsc_axes.set_xlabel("epoch")
    dsc_axes.set_ylabel("validation DSC")
    dsc_axes.set_ylim(0, 1)
    for axes in (loss_axes, dsc_axes):
        axes.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
