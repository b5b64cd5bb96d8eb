"""``AWQConfig`` / ``awq_config()`` and the ``quantize_`` handler registered with torchao.

``torchao.quantization.quantize_(model, awq_config())`` and
``awq_ao.quantize_(model, awq_config())`` swap the weight of each selected
``nn.Linear`` for an ``AWQInt4Tensor``. When calibration has left an
``AWQLinearCalibration`` on the module (``module.awq_calibration``), its clip
ratios and ``act_pre_scale`` are used; otherwise this is round-to-nearest.
"""

from __future__ import annotations

import contextvars
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
from torch import nn
from torchao.core.config import AOBaseConfig
from torchao.quantization import quantize_ as torchao_quantize_
from torchao.quantization.transform_module import register_quantize_module_handler

from awq_ao import quant
from awq_ao.tensor import AWQInt4Tensor

RTN_WARNING = (
    "awq_ao: quantizing linears that were never calibrated: this is round-to-nearest, "
    "not AWQ. Run awq_ao.calibrate(model, calibration_data, config) first for AWQ's accuracy."
)
_rtn_warning_deferred = contextvars.ContextVar("awq_ao_rtn_warning_deferred", default=None)


@dataclass
class AWQConfig(AOBaseConfig):
    """Weight-only group-wise int quantization with AWQ's calibrated scales and clipping.

    bits: 2, 3 or 4 (stored in 4-bit containers); group_size: a power of two >= 8
    of input channels sharing one scale and zero point; zero_point: asymmetric
    (True, AWQ's default) or symmetric quantization.
    """

    bits: int = 4
    group_size: int = 128
    zero_point: bool = True

    def __post_init__(self):
        quant.check_bits_and_group_size(self.bits, self.group_size)
        if not isinstance(self.zero_point, bool):
            raise ValueError(f"zero_point must be a bool, got zero_point={self.zero_point!r}")


def awq_config(bits: int = 4, group_size: int = 128, zero_point: bool = True) -> AWQConfig:
    """The config for ``quantize_``; see ``AWQConfig``."""
    return AWQConfig(bits=bits, group_size=group_size, zero_point=zero_point)


@dataclass
class AWQLinearCalibration:
    """What calibration leaves on an ``nn.Linear`` (as ``module.awq_calibration``).

    clip_ratio: None, a float, or a tensor [out_features, n_groups] of ratios of
    each group's max |w| (computed on the scaled weight ``W / act_pre_scale``),
    or [out_features, n_groups, 2] with separate low and high sides.
    act_pre_scale: None or [in_features]: the quantized weight is ``W / act_pre_scale``
    and activations are multiplied by it at run time (AWQ's ``1/s`` when no
    previous op can absorb it).
    """

    bits: int
    group_size: int
    zero_point: bool = True
    clip_ratio: Optional[Union[float, torch.Tensor]] = None
    act_pre_scale: Optional[torch.Tensor] = None


def _check_calibration_matches(calib: AWQLinearCalibration, config: AWQConfig) -> None:
    if (calib.bits, calib.group_size, calib.zero_point) != (config.bits, config.group_size, config.zero_point):
        raise ValueError(
            f"this linear was calibrated with bits={calib.bits}, group_size={calib.group_size}, "
            f"zero_point={calib.zero_point} but the config asks for bits={config.bits}, "
            f"group_size={config.group_size}, zero_point={config.zero_point}; "
            "calibrate again with the same config"
        )


def _warn_rtn() -> None:
    deferred = _rtn_warning_deferred.get()
    if deferred is not None:
        deferred.append(True)
    else:
        warnings.warn(RTN_WARNING, UserWarning, stacklevel=3)


@register_quantize_module_handler(AWQConfig)
def _awq_transform(module: nn.Module, config: AWQConfig) -> nn.Module:
    """Swap ``module.weight`` [N, K] for an ``AWQInt4Tensor``; returns the module."""
    weight = module.weight
    if isinstance(weight, AWQInt4Tensor):
        return module
    calib = getattr(module, "awq_calibration", None)
    clip_ratio, act_pre_scale = None, None
    if calib is None:
        _warn_rtn()
    else:
        _check_calibration_matches(calib, config)
        clip_ratio, act_pre_scale = calib.clip_ratio, calib.act_pre_scale
    w = weight.detach()
    if act_pre_scale is not None:
        w = (w.float() / act_pre_scale.float().to(w.device)).to(w.dtype)
    qweight = AWQInt4Tensor.from_float(
        w, config.bits, config.group_size, config.zero_point, clip_ratio, act_pre_scale
    )
    module.weight = nn.Parameter(qweight, requires_grad=False)
    if calib is not None:
        del module.awq_calibration
    return module


def tied_to_embedding(model: nn.Module) -> set:
    """Ids of parameters shared with an ``nn.Embedding`` (e.g. a tied lm_head)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def default_filter(model: nn.Module) -> Callable[[nn.Module, str], bool]:
    """Every ``nn.Linear`` except ``lm_head`` and linears tied to an embedding."""
    tied = tied_to_embedding(model)

    def keep(module: nn.Module, fqn: str) -> bool:
        return (
            isinstance(module, nn.Linear)
            and fqn.split(".")[-1] != "lm_head"
            and id(module.weight) not in tied
        )

    return keep


def quantize_(
    model: nn.Module,
    config: Optional[AWQConfig] = None,
    filter_fn: Optional[Callable[[nn.Module, str], bool]] = None,
    device: Optional[torch.types.Device] = None,
) -> nn.Module:
    """Quantize ``model``'s linears in place (default filter: all but lm_head); returns it.

    Emits at most one round-to-nearest warning per call.
    """
    config = awq_config() if config is None else config
    if not isinstance(config, AWQConfig):
        raise ValueError(f"config must be an AWQConfig (from awq_config()), got {type(config).__name__}")
    filter_fn = default_filter(model) if filter_fn is None else filter_fn
    uncalibrated: list = []
    token = _rtn_warning_deferred.set(uncalibrated)
    try:
        torchao_quantize_(model, config, filter_fn=filter_fn, device=device)
    finally:
        _rtn_warning_deferred.reset(token)
    if uncalibrated:
        warnings.warn(
            f"{RTN_WARNING} ({len(uncalibrated)} linear(s) affected)", UserWarning, stacklevel=2
        )
    return model
