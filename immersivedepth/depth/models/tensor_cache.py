"""Cache keys for values derived from tensors (e.g. transformed convolution kernels, folded weights).

CPU inference fast paths precompute things from parameters once and reuse them; :class:`TensorSnapshot` tells
them when a parameter changed so the derived value must be recomputed.
"""

from __future__ import annotations

import weakref

import torch

__all__ = ["TensorSnapshot"]


class TensorSnapshot:
    """Identity (weak reference), storage address and in-place version counter of some tensors: a cache key
    for values derived from them. ``matches(*tensors)`` is False as soon as one of them was replaced by another
    tensor, moved to other storage or modified in place through autograd-visible operations (``copy_`` in
    ``load_state_dict``, optimiser steps, in-place ops under ``torch.no_grad``). Edits through ``.data`` are
    invisible to the version counter. ``valid`` is False for inference tensors (no version counter), whose
    derived values must not be cached.
    """

    __slots__ = ("refs", "state", "valid")

    @staticmethod
    def _state(t: torch.Tensor) -> tuple:
        return t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)

    def __init__(self, *tensors: torch.Tensor | None):
        self.valid = not any(t is not None and t.is_inference() for t in tensors)
        self.refs = tuple(None if t is None else weakref.ref(t) for t in tensors)
        self.state = tuple(None if t is None or not self.valid else self._state(t) for t in tensors)

    def matches(self, *tensors: torch.Tensor | None) -> bool:
        if not self.valid or len(tensors) != len(self.refs):
            return False
        for t, ref, st in zip(tensors, self.refs, self.state):
            if t is None or ref is None:
                if t is not ref:
                    return False
                continue
            if ref() is not t or t.is_inference() or st != self._state(t):
                return False
        return True
