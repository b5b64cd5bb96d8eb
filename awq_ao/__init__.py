"""awq_ao: PyTorch-native AWQ (activation-aware weight quantization), torchao style.

    from awq_ao import quantize_, awq_config
    quantize_(model, awq_config(bits=4, group_size=128))
    model = torch.compile(model)
"""

from awq_ao import ops  # noqa: F401  (registers the torch.library ops)
from awq_ao.calibration import calibrate, calibrate_and_quantize, samples_from_text
from awq_ao.config import AWQConfig, AWQLinearCalibration, awq_config, quantize_
from awq_ao.formats import export_awq, load_awq, load_quantized, load_quantized_state_dict, load_state_dict, save_quantized, save_state_dict
from awq_ao.eval import perplexity
from awq_ao.tensor import AWQInt4Tensor
from awq_ao.tuning import tune_kernels

__version__ = "0.1.0"

__all__ = [
    "AWQConfig",
    "AWQInt4Tensor",
    "AWQLinearCalibration",
    "awq_config",
    "calibrate",
    "calibrate_and_quantize",
    "export_awq",
    "load_awq",
    "load_quantized",
    "load_quantized_state_dict",
    "load_state_dict",
    "perplexity",
    "quantize_",
    "samples_from_text",
    "save_quantized",
    "save_state_dict",
    "tune_kernels",
]
