"""render_dense: what users take home from a trained run.

* ``poses``      — :class:`~immersivedepth.render.poses.CameraPose`, poses files (ours and nerfstudio camera paths).
* ``paths``      — camera paths through the free space of the distance panorama (tour, circle, spiral, forward).
* ``frames``     — chunked rendering of one pose: RGB, distance, opacity, normals.
* ``dense``      — camera paths to H.264 videos / frames; poses files to panoramas for evaluation.
* ``mesh``       — seamless chunked marching tetrahedra on the density, colours, clean-up, GLB/PLY/OBJ export.
* ``depth_mesh`` — mesh and point cloud straight from the distance panorama (no training).
* ``stage``      — ``run_render_dense(run_dir, cfg)`` (mode=render_dense) and ``export_depth_products``.

Submodules are imported on demand (``from immersivedepth.render.stage import run_render_dense``).
"""
