"""360 distance estimation: tangent tiles -> depth models -> alignment -> blending -> fusion.

``load_depth_model(checkpoint_path)`` returns a Depth Anything V2 / MiDaS v3.1 model built from an
official checkpoint whose ``predict(rgb_uint8_HxWx3)`` reproduces that family's inference script.
"""

from __future__ import annotations

__all__ = ["load_depth_model"]


def load_depth_model(checkpoint_path, **kwargs):
    """Build the depth network stored in ``checkpoint_path`` (variant detected from the state dict).

    Keyword arguments (``variant``, ``device``, ``input_size``) are passed to
    :func:`immersivedepth.depth.models.load_depth_model`.
    """
    from immersivedepth.depth.models import load_depth_model as _load

    return _load(checkpoint_path, **kwargs)
