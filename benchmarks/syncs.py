"""Count the host synchronisations of a call on CPU: the ops that make the host wait for a GPU.

On a GPU every read of a device value on the host (``.item()``, ``.tolist()``, ``bool(t)``, ``nonzero``,
boolean-mask indexing, ``unique``, ``bincount``, a copy to the CPU, ...) drains the stream. A
``TorchDispatchMode`` sees the ATen ops that force such a read, on any device; ``tolist`` on a CPU tensor
reaches no ATen op, so it is counted by wrapping ``Tensor.tolist``. Used by ``bench_syncs`` and by
``tests/spectral/test_sync_count.py``; it needs only torch (it runs against older package versions too).
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_ATEN = torch.ops.aten
_READS = {
    _ATEN._local_scalar_dense.default,  # item(), int(t), float(t), bool(t)
    _ATEN.nonzero.default,
    _ATEN.masked_select.default,
    _ATEN._unique.default,
    _ATEN._unique2.default,
    _ATEN.unique_dim.default,
    _ATEN.unique_consecutive.default,
    _ATEN.bincount.default,  # sizes its output from the maximum
    _ATEN.equal.default,
    _ATEN.allclose.default,
}
_INDEX = {_ATEN.index.Tensor, _ATEN.index_put.default, _ATEN.index_put_.default, _ATEN._index_put_impl_.default}


class SyncCounter(TorchDispatchMode):
    """Counts the ops that make the host wait for the device, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _READS:
            self.counts[str(func)] += 1
        elif func in _INDEX and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.counts[f"{func} (boolean mask)"] += 1
        elif func is _ATEN.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            self.counts[str(func)] += 1
        elif func in (_ATEN._to_copy.default, _ATEN.copy_.default) and _to_host(func, args, kwargs):
            self.counts[f"{func} (to the host)"] += 1
        return func(*args, **kwargs)

    def __enter__(self):
        self._tolist = torch.Tensor.tolist
        counts = self.counts
        original = self._tolist

        def tolist(t):
            counts["Tensor.tolist"] += 1
            return original(t)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _to_host(func, args, kwargs) -> bool:
    """A copy whose destination is the CPU (on CPU every tensor is there: counted only when explicit)."""
    if func is _ATEN._to_copy.default:
        device = kwargs.get("device")
        return device is not None and torch.device(device).type == "cpu"
    return False
