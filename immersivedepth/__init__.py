"""ImmersiveDepth: one 360-degree panorama -> seamless distance map, radiance field, novel views, meshes."""

__version__ = "0.1.0"
