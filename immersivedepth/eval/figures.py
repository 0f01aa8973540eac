"""Error-map figures of ``mode=evaluate`` (matplotlib, headless Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files; never open a window (also on machines without a display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from immersivedepth import io  # noqa: E402

FIGURE_DPI = 100
# The AbsRel colour range: 0 .. 0.5 (errors of 50 % and more saturate) keeps figures of different panoramas comparable.
ABS_REL_VMAX = 0.5


def _save(fig, path: Path) -> None:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=FIGURE_DPI, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)


def depth_error_figure(path: Path, gt: np.ndarray, aligned: np.ndarray, mask: np.ndarray, title: str) -> None:
    """Three panels: GT distance, aligned prediction (same colour range), AbsRel error on ``mask`` (all ``(H, W)``)."""
    vmax = float(np.nanmax(np.where(mask, gt, np.nan)))
    err = np.where(mask, np.abs(aligned - gt) / np.where(mask, gt, 1.0), np.nan)
    fig, axes = plt.subplots(3, 1, figsize=(8, 12))
    for ax, img, name, kw in (
        (axes[0], np.where(mask, gt, np.nan), "ground truth distance (m)", {"vmin": 0, "vmax": vmax, "cmap": "turbo"}),
        (axes[1], aligned, "prediction, aligned", {"vmin": 0, "vmax": vmax, "cmap": "turbo"}),
        (axes[2], err, "AbsRel |pred - gt| / gt (masked pixels blank)",
         {"vmin": 0, "vmax": ABS_REL_VMAX, "cmap": "magma"}),
    ):
        im = ax.imshow(img, **kw)
        ax.set_title(name)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.025)
    fig.suptitle(title)
    _save(fig, path)


def novel_view_figure(path: Path, gt: np.ndarray, pred: np.ndarray, visible: np.ndarray, title: str) -> None:
    """Three panels: GT panorama, rendered view, per-pixel RGB error with the disoccluded pixels outlined."""
    err = np.abs(np.clip(pred, 0, 1) - np.clip(gt, 0, 1)).mean(axis=-1)
    fig, axes = plt.subplots(3, 1, figsize=(8, 12))
    axes[0].imshow(np.clip(gt, 0, 1))
    axes[0].set_title("ground truth")
    axes[1].imshow(np.clip(pred, 0, 1))
    axes[1].set_title("rendered")
    im = axes[2].imshow(err, vmin=0, vmax=1, cmap="magma")
    axes[2].contour(~visible, levels=[0.5], colors="cyan", linewidths=0.5)
    axes[2].set_title("mean |RGB error| (cyan: border of the pixels the input never saw)")
    fig.colorbar(im, ax=axes[2], fraction=0.025)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    _save(fig, path)
