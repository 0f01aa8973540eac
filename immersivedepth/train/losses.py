"""Training losses of the radiance field (all return scalar tensors; shapes in the docstrings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossWeights", "losses", "color_loss", "distance_loss", "distortion_loss", "opacity_loss", "normal_loss",
           "psnr_from_mse"]


@dataclass(frozen=True)
class LossWeights:
    """The ``field.loss`` section: term weights (0 disables a term) and the shapes of the colour/distance terms."""

    color: float = 1.0
    color_kind: str = "mse"
    color_beta: float = 0.05
    distance: float = 1.0
    distance_beta: float = 0.01
    distance_relative: bool = True
    distortion: float = 0.05
    opacity: float = 0.1
    normal: float = 0.0

    @classmethod
    def from_config(cls, loss: Mapping) -> LossWeights:
        return cls(**{k: loss[k] for k in cls.__dataclass_fields__})


def losses(outputs: Mapping, batch, weights: LossWeights, far_rgb: torch.Tensor | None = None) -> dict:
    """Every training loss term of one step and their weighted sum ``total`` (scalar tensors).

    Args:
        outputs: the volume renderer's output for the batch (``rgb (B,3)``, ``distance (B,)``, ``opacity (B,)``,
            ``weights``/``t``/``delta`` ``(B,K)``, ``normal (B,3)`` when the normal term is on).
        batch: a :class:`~immersivedepth.train.sampler.TrainBatch` (targets, masks, optional per-ray weights).
        weights: the term weights.
        far_rgb: ``(F,3)`` rendered colours of the batch's far rays (pixels without a distance): they join the colour
            term only (their targets ``batch.far_rgb``), no distance, distortion or opacity term.
    """
    cm, dm = batch.color_mask, batch.depth_mask
    cw = None if batch.color_weight is None else batch.color_weight[cm]
    pred, target = outputs["rgb"][cm], batch.rgb[cm]
    if far_rgb is not None and far_rgb.shape[0]:
        pred, target = torch.cat([pred, far_rgb]), torch.cat([target, batch.far_rgb])
        cw = None if cw is None else torch.cat([cw, cw.new_ones(far_rgb.shape[0])])
    l_col = color_loss(pred, target, kind=weights.color_kind, beta=weights.color_beta, weight=cw)
    l_dist = distance_loss(outputs["distance"], batch.distance, dm, beta=weights.distance_beta,
                           relative=weights.distance_relative, weight=batch.distance_weight)
    l_dst = distortion_loss(outputs["weights"], outputs["t"], outputs["delta"], scale=batch.scale)
    l_opa = opacity_loss(outputs["opacity"], cm)
    l_nrm = normal_loss(outputs["normal"], batch.normals, dm) if weights.normal > 0 else l_dist.new_zeros(())
    total = (weights.color * l_col + weights.distance * l_dist + weights.distortion * l_dst
             + weights.opacity * l_opa + weights.normal * l_nrm)
    return {"color": l_col, "distance": l_dist, "distortion": l_dst, "opacity": l_opa, "normal": l_nrm,
            "total": total}


def color_loss(pred: torch.Tensor, target: torch.Tensor, *, kind: str = "mse", beta: float = 0.05,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Photometric loss between ``(N, 3)`` colours: ``mse`` or ``smooth_l1`` (Huber with ``beta``).

    ``weight`` ``(N,)`` scales each ray's term (mean over rays of ``weight * error``); ``None``: all 1.
    """
    if kind not in ("mse", "smooth_l1"):
        raise ValueError(f"field.loss.color_kind must be 'mse' or 'smooth_l1', got {kind!r}")
    if weight is not None:
        if pred.numel() == 0:
            return pred.new_zeros(())
        err = F.mse_loss(pred, target, reduction="none") if kind == "mse" else F.smooth_l1_loss(
            pred, target, beta=beta, reduction="none")
        return (weight[:, None] * err).mean()
    if kind == "mse":
        return F.mse_loss(pred, target)
    return F.smooth_l1_loss(pred, target, beta=beta)


def distance_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *, beta: float = 0.01,
                  relative: bool = True, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Smooth-L1 on the expected ray distance ``(N,)`` vs the supervision ``(N,)``.

    ``relative``: on ``(pred - target) / target`` (AbsRel-like, scale free), else on the raw difference.
    ``mask`` ``(N,)`` bool selects the supervised rays (none selected: 0); ``weight`` ``(N,)`` scales each ray's term.
    """
    if mask is not None:
        pred, target = pred[mask], target[mask]
        weight = None if weight is None else weight[mask]
    if pred.numel() == 0:
        return pred.new_zeros(())
    err = (pred - target) / target if relative else pred - target
    if weight is not None:
        return (weight * F.smooth_l1_loss(err, torch.zeros_like(err), beta=beta, reduction="none")).mean()
    return F.smooth_l1_loss(err, torch.zeros_like(err), beta=beta)


def distortion_loss(weights: torch.Tensor, t: torch.Tensor, delta: torch.Tensor, *,
                    scale: float = 1.0) -> torch.Tensor:
    """mip-NeRF 360's distortion loss in its O(K) form, mean over rays.

    ``weights, t, delta`` ``(N, K)``: compositing weights, interval midpoints and lengths, samples sorted along
    each ray (zero-weight padding may sit anywhere). With ``m = t / scale`` and ``d = delta / scale``::

        L = sum_{i,j} w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 d_i
          = 2 sum_i w_i (m_i W_{<i} - S_{<i}) + 1/3 sum_i w_i^2 d_i,
        W_{<i} = sum_{j<i} w_j,   S_{<i} = sum_{j<i} w_j m_j
    """
    m = t / scale
    d = delta / scale
    wm = weights * m
    w_before = torch.cumsum(weights, 1) - weights
    s_before = torch.cumsum(wm, 1) - wm
    inter = 2.0 * (weights * (m * w_before - s_before)).sum(1)
    intra = (weights.square() * d).sum(1) / 3.0
    return (inter + intra).mean()


def opacity_loss(opacity: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean(1 - opacity)`` over the rays ``mask`` selects (``opacity`` ``(N,)``): a ray with a supervised surface
    must be fully opaque (otherwise a half-transparent surface with a compensating colour fits the training view
    but renders wrong from elsewhere)."""
    if mask is not None:
        opacity = opacity[mask]
    if opacity.numel() == 0:
        return opacity.new_zeros(())
    return (1.0 - opacity).clamp_min(0.0).mean()


def normal_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``1 - cos`` between rendered and reference unit normals ``(N, 3)``, mean over ``mask``."""
    if mask is not None:
        pred, target = pred[mask], target[mask]
    if pred.numel() == 0:
        return pred.new_zeros(())
    return (1.0 - (F.normalize(pred, dim=-1) * F.normalize(target, dim=-1)).sum(-1)).mean()


def psnr_from_mse(mse: float, max_val: float = 1.0) -> float:
    """PSNR in dB of a mean squared error (``inf`` for 0)."""
    if mse <= 0:
        return float("inf")
    return float(10.0 * torch.log10(torch.tensor(max_val * max_val / mse)))
