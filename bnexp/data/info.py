"""What `bnexp data info` reports about a loaded dataset: class counts and pixel statistics."""

from __future__ import annotations

import pandas as pd
import torch

from bnexp.data import Dataset
from bnexp.data.arrays import moments


def class_table(data: Dataset) -> pd.DataFrame:
    """One row per class (label order): label, class, train, test."""
    train, test = data.class_counts()
    table = {"label": range(len(data.classes)), "class": data.classes, "train": train}
    if data.y_val is not None:  # data.val_fraction's split, carved from the training set
        table["val"] = torch.bincount(data.y_val.cpu(), minlength=len(data.classes)).tolist()
    return pd.DataFrame(table | {"test": test})


def value_table(data: Dataset) -> pd.DataFrame:
    """Per split and channel (images) or over all features (vectors): mean, std, min, max.

    In the units stored: 0..255 for uint8 pixels (scaled and standardized per batch), the
    values after standardization for float inputs.
    """
    rows = []
    splits = (("train", data.x_train), ("val", data.x_val), ("test", data.x_test))
    for split, x in ((name, x) for name, x in splits if x is not None):
        x = x.cpu()
        if x.dim() == 4:
            mean, std = moments(x.numpy())
            lo, hi = x.amin(dim=(0, 2, 3)).tolist(), x.amax(dim=(0, 2, 3)).tolist()
            names = ["RGB"[c] if x.shape[1] == 3 else str(c) for c in range(x.shape[1])]
        else:
            flat = x.reshape(-1, 1).numpy()
            mean, std = moments(flat)
            lo, hi, names = [x.min().item()], [x.max().item()], ["all"]
        for c, name in enumerate(names):
            rows.append(
                {
                    "split": split,
                    "channel": name,
                    "mean": float(mean[c]),
                    "std": float(std[c]),
                    "min": lo[c],
                    "max": hi[c],
                }
            )
    return pd.DataFrame(rows)


def standardization(data: Dataset) -> str:
    """How pixels are turned into network inputs, in words."""
    if data.x_train.dtype != torch.uint8:
        return "float inputs, used as stored (standardized at load time if data.standardize)"
    if data.mean is None:
        return "uint8 pixels / 255 per batch (no standardization)"
    mean = ", ".join(f"{v:.4f}" for v in data.mean.reshape(-1)[:3].tolist())
    std = ", ".join(f"{v:.4f}" for v in data.std.reshape(-1)[:3].tolist())
    more = ", ..." if data.mean.numel() > 3 else ""
    return (
        "uint8 pixels / 255, then (x - mean) / std per batch with training statistics: "
        f"mean ({mean}{more}), std ({std}{more})"
    )
