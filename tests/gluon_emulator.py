"""Run the Gluon kernels of ``kernels/int4_wgmma.py`` and ``kernels/int4_gemv_staged.py`` on CPU tensors, for
their logic (no GPU, no compiler).

Gluon has no interpreter, so the kernel's Python source is executed here as plain Python, one program after
another, with ``gl`` and the few other names it uses bound to PyTorch stand-ins: tensors are torch tensors
(layouts are ignored: Gluon's values do not depend on them, and the compiler checks them), pointers are a
flat tensor and an offset tensor, shared memory is a tensor, ``mma_v2`` and ``warpgroup_mma`` are float64
matrix products added to the fp32 accumulator, waits, fences and barriers do nothing, ``cp.async`` is a
masked load, and the inline PTX runs on ``ptx_emulator.run_ptx``. What this checks: indexing, masks, tails,
splits, the in-kernel sum's protocol (programs run in order, so the last to arrive adds the partials), the
unpacking and the per-tile arithmetic of every variant. What it cannot: anything about the hardware
(register hazards, memory ordering, layouts), which the SASS tests and the GPU check cover.
"""

import itertools
import types

import torch
from ptx_emulator import run_ptx

from awq_ao.kernels import int4_gemv_staged, int4_wgmma, ptx


class Tensor(torch.Tensor):
    """A torch tensor that also takes Gluon's ``.to(dtype, bitcast=True)``."""

    def to(self, *args, bitcast=False, **kwargs):
        if bitcast:
            return self.view(args[0])
        return super().to(*args, **kwargs)


def _t(x) -> Tensor:
    return x.as_subclass(Tensor) if isinstance(x, torch.Tensor) else x


class Pointer:
    """A block of pointers: ``base`` (a flat tensor) at integer ``offsets`` (a tensor, or 0 for one pointer)."""

    def __init__(self, base: torch.Tensor, offsets=0):
        self.base, self.offsets = base, offsets
        self.dtype = types.SimpleNamespace(element_ty=base.dtype)

    def __add__(self, other):
        return Pointer(self.base, self.offsets + other)

    __radd__ = __add__


def _gather(ptr: Pointer, mask, other):
    offsets = torch.as_tensor(ptr.offsets).long()
    if mask is None:
        mask = torch.ones((), dtype=torch.bool)
    offsets, mask = torch.broadcast_tensors(offsets, torch.as_tensor(mask))
    safe = torch.where(mask, offsets, torch.zeros_like(offsets))
    values = ptr.base[safe.reshape(-1)].reshape(safe.shape)
    return _t(torch.where(mask, values, torch.tensor(other if other is not None else 0).to(values.dtype)))


class SharedMemory:
    """A shared-memory descriptor: a view of a tensor."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def index(self, i):
        return SharedMemory(self.tensor[int(i)])

    def permute(self, dims):
        return SharedMemory(self.tensor.permute(*dims))

    def store(self, value):
        self.tensor.copy_(value.to(self.tensor.dtype))

    def load(self, layout=None):
        return _t(self.tensor.clone())


PREFETCHED = []  # (words tensor, flat word offsets) of each L2 prefetch the emulated kernels asked for


def _inline_asm(asm, constraints, args, dtype, is_pure=True, pack=1):
    """Two 16-bit outputs of a pair-unpacking string, lane by lane (``ptx_emulator``); an L2 prefetch
    (``prefetch.global.L2 [$1]``, a hint) is recorded in PREFETCHED and returns zeros."""
    asm = getattr(asm, "value", asm)
    if "prefetch.global.L2" in asm:  # (a second argument: the request's predicate, lane by lane)
        ptr = args[0]
        offsets = torch.as_tensor(ptr.offsets).reshape(-1)
        if len(args) > 1:
            offsets = offsets[torch.as_tensor(args[1]).reshape(-1).expand(offsets.shape) != 0]
        PREFETCHED.append((ptr.base, offsets.clone()))
        return _t(torch.zeros(torch.as_tensor(ptr.offsets).shape, dtype=torch.int32))
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    shape = torch.broadcast_shapes(*(a.shape for a in tensors))
    regs = {f"${i + 2}": (torch.as_tensor(a).to(torch.int64) & 0xFFFFFFFF).expand(shape).reshape(-1)
            for i, a in enumerate(args)}
    low, high = run_ptx(asm, regs)
    return tuple(_t(h.to(torch.int32).to(torch.int16).view(d).reshape(shape)) for h, d in zip((low, high), dtype))


class _Program:
    """The program ids of the program being run, for ``gl.program_id`` and ``gl.num_programs``."""
    pid = (0, 0, 0)
    grid = (1, 1, 1)


def _atomic_add(ptr, value, sem=None, scope=None):
    index = int(torch.as_tensor(ptr.offsets))
    old = ptr.base[index].clone()
    ptr.base[index] += value
    return _t(old)


def _atomic_xchg(ptr, value, sem=None, scope=None):
    index = int(torch.as_tensor(ptr.offsets))
    old = ptr.base[index].clone()
    ptr.base[index] = value
    return _t(old)


def _store(ptr, value, mask=None):
    offsets = torch.as_tensor(ptr.offsets).long()
    value = torch.as_tensor(value).to(ptr.base.dtype)
    mask = torch.ones((), dtype=torch.bool) if mask is None else torch.as_tensor(mask)
    offsets, value, mask = torch.broadcast_tensors(offsets, value, mask)
    ptr.base[offsets[mask]] = value[mask]


def _dot(a, b, acc):
    """An MMA: the exact product of the 16-bit operands, accumulated into the fp32 accumulator."""
    return _t((acc.double() + a.double() @ b.double()).float())


def _layout(*args, **kwargs):
    return None


gl = types.SimpleNamespace(
    bfloat16=torch.bfloat16, float16=torch.float16, float32=torch.float32, int32=torch.int32,
    int16=torch.int16, uint8=torch.uint8, int8=torch.int8,
    program_id=lambda axis: _Program.pid[axis],
    num_programs=lambda axis: _Program.grid[axis],
    arange=lambda start, end, layout=None: _t(torch.arange(start, end, dtype=torch.int32)),
    zeros=lambda shape, dtype, layout=None: _t(torch.zeros(shape, dtype=dtype)),
    zeros_like=lambda x: _t(torch.zeros_like(x)),
    load=lambda ptr, mask=None, other=None, **kwargs: _gather(ptr, mask, other),
    store=_store,
    sum=lambda x, axis: _t(x.sum(dim=axis)),
    expand_dims=lambda x, axis: _t(x.unsqueeze(axis)),
    join=lambda a, b: _t(torch.stack((a, b), dim=-1)),
    permute=lambda x, dims: _t(x.permute(*dims)),
    reshape=lambda x, shape: _t(x.reshape(shape)),
    convert_layout=lambda x, layout, assert_trivial=False: x,
    inline_asm_elementwise=_inline_asm,
    allocate_shared_memory=lambda dtype, shape, layout: SharedMemory(torch.zeros(shape, dtype=dtype)),
    atomic_add=_atomic_add, atomic_xchg=_atomic_xchg,
    static_range=range,
    minimum=lambda a, b: _t(torch.minimum(torch.as_tensor(a), torch.as_tensor(b))),
    BlockedLayout=_layout, SliceLayout=_layout, NVMMADistributedLayout=_layout, DotOperandLayout=_layout,
    NVMMASharedLayout=_layout, SwizzledSharedLayout=_layout,
)


def _no_pdl(PDL=0) -> None:
    """``pdl.gluon_prologue``: nothing to wait for on the CPU (programmatic dependent launch is a GPU launch mode)."""
    assert PDL == 0, "programmatic dependent launch on the emulator"


def _bind(module) -> dict:
    """The module's globals with ``gl``, the MMAs, waits, fences, copies and every Gluon function replaced."""
    env = dict(vars(module))
    env.update(
        gl=gl, mma_v2=_dot,
        warpgroup_mma=lambda a, b, acc, is_async=False: _dot(a, b.tensor, acc),
        warpgroup_mma_wait=lambda num_outstanding=0, deps=(): deps[0] if len(deps) == 1 else tuple(deps),
        fence_async_shared=lambda: None, _cta_barrier=lambda: None,
        _async_load=lambda slot, ptrs, mask=None: slot.store(_gather(ptrs, mask, 0)),
        async_copy=types.SimpleNamespace(commit_group=lambda: None, wait_group=lambda n: None),
        pdl=types.SimpleNamespace(gluon_prologue=_no_pdl),
    )
    env["ptx"] = types.SimpleNamespace(gluon_prefetch_l2=_rebound(ptx.gluon_prefetch_l2, env))
    for name, value in vars(module).items():
        fn = getattr(value, "fn", None)
        if isinstance(fn, types.FunctionType) and fn.__module__ == module.__name__:
            env[name] = _rebound(value, env)
    return env


def _rebound(kernel_fn, env: dict):
    """A Gluon function's Python body with ``env`` as its globals (``gl`` and the rest replaced)."""
    fn = kernel_fn.fn
    return types.FunctionType(fn.__code__, env, fn.__name__, fn.__defaults__, fn.__closure__)


def _flat(a: torch.Tensor) -> torch.Tensor:
    """The tensor's storage from its first element on, as a flat view (the kernel indexes it by its strides)."""
    size = a.untyped_storage().nbytes() // a.element_size() - a.storage_offset()
    return a.as_strided((size,), (1,), a.storage_offset())


class EmulatedKernel:
    """``kernel[grid](*args, **constexprs)`` for a Gluon kernel of ``module``, run program by program on CPU."""

    def __init__(self, module, name: str):
        self.fn = _bind(module)[name]
        self.programs = 0  # programs run so far (a test can tell the kernel ran)
        self.constexprs = []  # each launch's keyword arguments (the constexprs)
        self.options = []  # each launch's compile options (num_warps, maxnreg)

    def __getitem__(self, grid):
        def launch(*args, num_warps=None, maxnreg=None, **kwargs):
            args = [Pointer(_flat(a)) if isinstance(a, torch.Tensor) else a for a in args]
            self.constexprs.append(kwargs)
            self.options.append({"num_warps": num_warps, "maxnreg": maxnreg})
            _Program.grid = tuple(grid) + (1,) * (3 - len(grid))
            for pid in itertools.product(*(range(g) for g in _Program.grid)):
                _Program.pid = pid
                self.fn(*args, **kwargs)
                self.programs += 1
        return launch


def wgmma_kernel() -> EmulatedKernel:
    """``int4_wgmma._int4_wgmma_kernel``, emulated."""
    return EmulatedKernel(int4_wgmma, "_int4_wgmma_kernel")


def staged_gemv_kernel() -> EmulatedKernel:
    """``int4_gemv_staged._int4_gemv_staged_kernel``, emulated."""
    return EmulatedKernel(int4_gemv_staged, "_int4_gemv_staged_kernel")
