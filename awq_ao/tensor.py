"""``AWQInt4Tensor``: a group-wise int4 (2/3/4-bit) weight as a torch tensor subclass.

Canonical data (what is saved):

* ``qdata``       uint8 [N, K_pad / 2]: codes packed by ``quant.pack_int4``
* ``scale``       [N, K_pad / G] in the activation dtype (fp32 / fp16 / bf16)
* ``zero_point``  uint8 [N, K_pad / G], integer zero points
* ``act_pre_scale`` (optional) [K] in the activation dtype: the linear computes
  ``F.linear(x * act_pre_scale, dequantize())``; it carries AWQ scales that no
  previous op could absorb.

Derived data (never saved, rebuilt per device and dtype): ``cpu_packed`` and
``cpu_scale_zero``, the layout of ``aten._weight_int4pack_mm_for_cpu``, built
once when the tensor lands on the CPU in bf16 with a shape the kernel takes.

The tensor presents itself with the logical shape [N, K] (``in_features`` K)
and the activation dtype, which is what ``dequantize()`` returns.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from typing import Optional

import torch
from torch.utils._python_dispatch import return_and_correct_aliasing
from torchao.utils import TorchAOBaseTensor

from awq_ao import quant

aten = torch.ops.aten

# aten._weight_int4pack_mm_for_cpu takes these group sizes and N % 16 == 0
CPU_KERNEL_GROUP_SIZES = (32, 64, 128, 256)


def cpu_kernel_layout(
    qdata: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, group_size: int, bits: int
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Build the CPU int4 kernel's (packed weight, scale_and_zero) or (None, None).

    The kernel computes ``w = (c - 8) * s + zero`` from a 4-bit code ``c``. We
    store ``c = q + 8 - 2**(bits-1)`` (codes centred on 8) and
    ``zero = (2**(bits-1) - z) * s``, which is AWQ's ``(q - z) * s`` exactly in
    real arithmetic; centring keeps the zero term small, so rounding it to bf16
    costs little even at 2 bits. Only bf16 activations are fast in that kernel,
    so only a bf16 tensor gets the layout.
    """
    n = qdata.shape[0]
    usable = (
        qdata.device.type == "cpu"
        and scale.dtype == torch.bfloat16
        and n % 16 == 0
        and group_size in CPU_KERNEL_GROUP_SIZES
    )
    if not usable:
        return None, None
    half = 2 ** (bits - 1)
    codes = quant.unpack_int4(qdata).to(torch.int32) + (8 - half)
    packed = aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    s = scale.float()
    zero = (half - zero_point.float()) * s
    scale_and_zero = torch.stack([s.t(), zero.t()], dim=-1).to(scale.dtype).contiguous()
    return packed, scale_and_zero


class AWQInt4Tensor(TorchAOBaseTensor):
    """Group-wise int4 weight [out_features, in_features]; see the module docstring."""

    tensor_data_names = ["qdata", "scale", "zero_point"]
    tensor_attribute_names = ["bits", "group_size", "shape"]
    optional_tensor_data_names = ["act_pre_scale", "cpu_packed", "cpu_scale_zero"]
    optional_tensor_attribute_names = ["transposed"]

    def __new__(
        cls,
        qdata: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor,
        bits: int,
        group_size: int,
        shape,
        act_pre_scale: Optional[torch.Tensor] = None,
        cpu_packed: Optional[torch.Tensor] = None,
        cpu_scale_zero: Optional[torch.Tensor] = None,
        transposed: bool = False,
    ):
        return torch.Tensor._make_wrapper_subclass(
            cls, shape, dtype=scale.dtype, device=qdata.device, requires_grad=False
        )

    def __init__(
        self,
        qdata: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor,
        bits: int,
        group_size: int,
        shape,
        act_pre_scale: Optional[torch.Tensor] = None,
        cpu_packed: Optional[torch.Tensor] = None,
        cpu_scale_zero: Optional[torch.Tensor] = None,
        transposed: bool = False,
    ):
        self.qdata = qdata
        self.scale = scale
        self.zero_point = zero_point
        self.bits = bits
        self.group_size = group_size
        self.act_pre_scale = act_pre_scale
        self.cpu_packed = cpu_packed
        self.cpu_scale_zero = cpu_scale_zero
        self.transposed = transposed
        # plain ints: reading .shape on the subclass goes through __torch_function__
        self._in_features = int(shape[0] if transposed else shape[1])
        if qdata.is_cuda and type(qdata) is torch.Tensor:  # eager, not a fake or functional trace tensor
            # the split-K tile counters of this device exist before any compiled graph reads them
            from awq_ao.kernels.splitk import tile_counters

            tile_counters(qdata.device)

    # ----------------------------------------------------------------- building
    @classmethod
    def from_parts(
        cls,
        qdata: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor,
        bits: int,
        group_size: int,
        in_features: int,
        act_pre_scale: Optional[torch.Tensor] = None,
    ) -> "AWQInt4Tensor":
        """Wrap canonical data and derive the kernel layout for its device and dtype."""
        cpu_packed, cpu_scale_zero = cpu_kernel_layout(qdata, scale, zero_point, group_size, bits)
        shape = (qdata.shape[0], in_features)
        return cls(qdata, scale, zero_point, bits, group_size, shape, act_pre_scale, cpu_packed, cpu_scale_zero)

    @classmethod
    def from_float(
        cls,
        weight: torch.Tensor,
        bits: int = 4,
        group_size: int = 128,
        zero_point: bool = True,
        clip_ratio=None,
        act_pre_scale: Optional[torch.Tensor] = None,
    ) -> "AWQInt4Tensor":
        """Quantize a float weight [N, K] (already multiplied by any AWQ scale).

        ``act_pre_scale`` [K], if given, multiplies the activations at run time.
        """
        quant.check_weight(weight)
        q, scale, zero = quant.quantize(weight.detach(), bits, group_size, zero_point, clip_ratio)
        if act_pre_scale is not None:
            act_pre_scale = _check_pre_scale(act_pre_scale, weight)
        return cls.from_parts(quant.pack_int4(q), scale, zero, bits, group_size, weight.shape[1], act_pre_scale)

    @classmethod
    def concat_rows(cls, weights: list["AWQInt4Tensor"]) -> "AWQInt4Tensor":
        """Stack weights that read the same input ([N_i, K] each) into one [sum N_i, K] weight.

        They must agree on bits, group size, in_features, dtype and act_pre_scale.
        """
        first = weights[0]
        for w in weights[1:]:
            same_pre = (w.act_pre_scale is None) == (first.act_pre_scale is None) and (
                w.act_pre_scale is None or torch.equal(w.act_pre_scale, first.act_pre_scale))
            if (w.bits, w.group_size, w.in_features, w.dtype) != (first.bits, first.group_size, first.in_features,
                                                                   first.dtype) or not same_pre:
                raise ValueError("concat_rows needs weights with the same bits, group size, in_features, dtype "
                                 "and act_pre_scale")
            if w.transposed or first.transposed:
                raise ValueError("concat_rows takes untransposed weights")
        return cls.from_parts(
            torch.cat([w.qdata for w in weights]), torch.cat([w.scale for w in weights]),
            torch.cat([w.zero_point for w in weights]), first.bits, first.group_size, first.in_features,
            first.act_pre_scale,
        )

    # ------------------------------------------------------------------ queries
    @property
    def out_features(self) -> int:
        return self.qdata.shape[0]

    @property
    def in_features(self) -> int:
        return self._in_features

    def _dequantized_rows(self, dtype: torch.dtype) -> torch.Tensor:
        """The stored weight dequantized, [N, K] in dtype, whatever the transposed flag."""
        return quant.dequantize(quant.unpack_int4(self.qdata), self.scale, self.zero_point, self.group_size,
                                self.in_features, dtype)

    def dequantize(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The logical weight [N, K] (or [K, N] when transposed), without act_pre_scale."""
        w = self._dequantized_rows(dtype or self.dtype)
        return w.t() if self.transposed else w

    def effective_weight(self, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The dense weight a linear with this tensor multiplies by: ``dequantize()`` with act_pre_scale folded
        into its K columns (computed in fp32, then cast to dtype, default the activation dtype); [N, K], or
        [K, N] when transposed."""
        w = self._dequantized_rows(torch.float32)
        if self.act_pre_scale is not None:
            w = w * self.act_pre_scale.float()
        w = w.to(dtype or self.dtype)
        return w.t() if self.transposed else w

    def __repr__(self) -> str:
        kernel = "cpu-int4pack" if self.cpu_packed is not None else "reference"
        if self.device.type == "cuda":
            kernel = "triton"
        return (
            f"{type(self).__name__}(shape={tuple(self.shape)}, bits={self.bits}, "
            f"group_size={self.group_size}, dtype={self.dtype}, device={self.device}, "
            f"act_pre_scale={self.act_pre_scale is not None}, kernel={kernel}"
            f"{', transposed' if self.transposed else ''})"
        )

    def _stable_hash_for_caching(self) -> str:
        """Key for torch.compile's AOT autograd cache: metadata plus the dispatch code.

        The traced graph depends on awq_ao's dispatch (which path, which op), not
        only on shapes, so the source of the modules that decide it and the
        dispatch threshold are part of the key: an edited awq_ao never reuses a
        stale compiled graph.
        """
        from awq_ao import ops

        inner = [_code_fingerprint(), ops.CPU_INT4_MAX_M]
        for name in self.tensor_data_names + self.optional_tensor_data_names:
            t = getattr(self, name)
            inner.append(None if t is None else (name, tuple(t.shape), str(t.dtype), str(t.device)))
        meta = (type(self).__name__, self.bits, self.group_size, tuple(self.shape), str(self.dtype),
                self.transposed, tuple(inner))
        return hashlib.blake2b(repr(meta).encode(), digest_size=16).hexdigest()

    def canonical(self) -> dict:
        """Only the data that defines the tensor (what is saved)."""
        parts = {"qdata": self.qdata, "scale": self.scale, "zero_point": self.zero_point}
        if self.act_pre_scale is not None:
            parts["act_pre_scale"] = self.act_pre_scale
        return parts

    def _rebuilt(self, device=None, dtype=None) -> "AWQInt4Tensor":
        """Same tensor on another device / activation dtype, kernel layout re-derived."""
        device = self.device if device is None else device
        dtype = self.dtype if dtype is None else dtype
        pre = None if self.act_pre_scale is None else self.act_pre_scale.to(device, dtype)
        out = AWQInt4Tensor.from_parts(
            self.qdata.to(device), self.scale.to(device, dtype), self.zero_point.to(device),
            self.bits, self.group_size, self.in_features, pre,
        )
        return _transpose(out) if self.transposed else out


@functools.lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """Digest of the source files whose code decides what a linear traces to."""
    from awq_ao import ops, quant as quant_module
    from awq_ao.kernels import configs, int4_gemm, int4_gemv, int4_matmul, int4_planes

    digest = hashlib.blake2b(digest_size=16)
    for module in (ops, quant_module, int4_matmul, configs, int4_gemv, int4_gemm, int4_planes,
                   sys.modules[__name__]):
        with open(module.__file__, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _transpose(t: AWQInt4Tensor) -> AWQInt4Tensor:
    """A view of ``t`` with the transposed flag flipped (no data moves)."""
    n, k = t.shape
    return AWQInt4Tensor(
        t.qdata, t.scale, t.zero_point, t.bits, t.group_size, (k, n),
        t.act_pre_scale, t.cpu_packed, t.cpu_scale_zero, not t.transposed,
    )


def _check_pre_scale(act_pre_scale: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if act_pre_scale.shape != (weight.shape[1],):
        raise ValueError(
            f"act_pre_scale must have shape ({weight.shape[1]},), got {tuple(act_pre_scale.shape)}"
        )
    if not torch.isfinite(act_pre_scale).all() or (act_pre_scale == 0).any():
        raise ValueError("act_pre_scale must be finite and non-zero")
    return act_pre_scale.detach().to(weight.device, weight.dtype).contiguous()


# --------------------------------------------------------------------- dispatch
implements = AWQInt4Tensor.implements
implements_torch_function = AWQInt4Tensor.implements_torch_function


@implements([aten.linear.default])
@implements_torch_function([torch.nn.functional.linear])
def _linear(func, types, args, kwargs):
    from awq_ao.ops import int4_linear

    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    if w.transposed:
        raise ValueError("F.linear takes the weight as [out, in]; got a transposed AWQInt4Tensor")
    return int4_linear(x, w, bias)


@implements([aten.t.default])
def _t(func, types, args, kwargs):
    return return_and_correct_aliasing(func, args, kwargs, _transpose(args[0]))


@implements([aten.mm.default])
def _mm(func, types, args, kwargs):
    from awq_ao.ops import int4_linear

    x, w = args[0], args[1]
    _require_transposed(w, "mm")
    return int4_linear(x, _transpose(w), None)


@implements([aten.addmm.default])
def _addmm(func, types, args, kwargs):
    from awq_ao.ops import int4_linear

    bias, x, w = args[0], args[1], args[2]
    beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
    _require_transposed(w, "addmm")
    y = int4_linear(x, _transpose(w), None)
    if alpha != 1:
        y = y * alpha
    return y + (bias if beta == 1 else bias * beta)


def _require_transposed(w, op: str) -> None:
    if not isinstance(w, AWQInt4Tensor) or not w.transposed:
        raise NotImplementedError(
            f"{op} with an AWQInt4Tensor takes the weight as its second matrix, transposed "
            "(x @ w.t()), as F.linear does"
        )


@implements([aten._to_copy.default])
def _to_copy(func, types, args, kwargs):
    self = args[0]
    to_kwargs = self._get_to_kwargs(*args[1:], **kwargs)
    out = self._rebuilt(to_kwargs["device"], to_kwargs["dtype"])
    return return_and_correct_aliasing(func, args, kwargs, out)


@implements([aten.copy_.default])
def _copy_(func, types, args, kwargs):
    dst, src = args[0], args[1]
    if not isinstance(src, AWQInt4Tensor):
        raise ValueError("copy_ into an AWQInt4Tensor needs an AWQInt4Tensor source")
    same = (
        dst.shape == src.shape and dst.bits == src.bits and dst.group_size == src.group_size
        and dst.transposed == src.transposed
        and (dst.act_pre_scale is None) == (src.act_pre_scale is None)
    )
    if not same:
        raise ValueError(f"copy_ between mismatched AWQInt4Tensors: {dst!r} <- {src!r}")
    for name, tensor in src.canonical().items():
        getattr(dst, name).copy_(tensor)
    dst.cpu_packed, dst.cpu_scale_zero = cpu_kernel_layout(dst.qdata, dst.scale, dst.zero_point, dst.group_size, dst.bits)
    return dst


torch.serialization.add_safe_globals([AWQInt4Tensor])
