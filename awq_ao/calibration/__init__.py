"""AWQ calibration: ``calibrate(model, calibration_data, config)`` and its data helpers."""

from awq_ao.calibration.api import calibrate, calibrate_and_quantize
from awq_ao.calibration.data import samples_from_dataset, samples_from_text, tokenize_text
from awq_ao.calibration.mappings import ARCHITECTURES, Architecture, ScaleGroup, detect

__all__ = [
    "ARCHITECTURES", "Architecture", "ScaleGroup", "calibrate", "calibrate_and_quantize", "detect",
    "samples_from_dataset", "samples_from_text", "tokenize_text",
]
