"""Optional LPIPS (Zhang et al. 2018) through the ``lpips`` package, only with weights already on disk.

Nothing is downloaded: the ``lpips`` package ships its linear heads, and the backbone (torchvision AlexNet / VGG /
SqueezeNet ImageNet weights) must already be in torch's hub cache. :func:`lpips_scorer` returns a scorer, or the
reason why not (the caller records it under ``skipped``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# torchvision's file names of the ImageNet backbones that lpips builds on (torch.hub's checkpoints folder).
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def backbone_path(net: str) -> Path:
    """Where torchvision looks for the ``net`` backbone's weights (``$TORCH_HOME/hub/checkpoints/...``)."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"evaluate.lpips.net={net!r} is not an LPIPS backbone; use one of {', '.join(BACKBONE_FILES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def lpips_scorer(net: str, device: str = "cpu"):
    """``(scorer, None)`` with ``scorer(pred (H,W,3), gt (H,W,3)) -> float`` in [0, 1] images, or ``(None, reason)``."""
    weights = backbone_path(net)
    try:
        import lpips  # optional third-party extra (requirements-lpips.txt)
    except ImportError:
        return None, "LPIPS needs the lpips package: pip install -r requirements-lpips.txt"
    if not weights.is_file():
        return None, (f"LPIPS ({net}) needs the torchvision backbone weights at {weights}; nothing is downloaded: "
                      "copy the file there (or set TORCH_HOME) to enable evaluate.lpips")
    model = lpips.LPIPS(net=net, verbose=False).to(device).eval()

    def score(pred: np.ndarray, gt: np.ndarray) -> float:
        # lpips expects (N,3,H,W) in [-1, 1]
        t = [torch.from_numpy(np.clip(x, 0, 1).transpose(2, 0, 1)[None].astype(np.float32) * 2 - 1).to(device)
             for x in (pred, gt)]
        with torch.no_grad():
            return float(model(t[0], t[1]).item())

    return score, None
