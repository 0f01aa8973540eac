"""360 distance estimation: tangent tiles -> depth models -> alignment -> blending -> fusion.

``load_depth_model(checkpoint_path)`` returns a Depth Anything V2 / MiDaS v3.1 model built from an
official checkpoint whose ``predict(rgb_uint8_HxWx3)`` reproduces that family's inference script.
"""

from immersivedepth.depth.models import load_depth_model

__all__ = ["load_depth_model"]
