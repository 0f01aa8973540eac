"""The pipeline's stages, one module each behind one interface (:class:`~immersivedepth.stages.base.Stage`), and the
runner that orders them (:mod:`immersivedepth.stages.runner`). A module here that defines ``STAGE`` is a stage."""
