"""Checkpoint formats: awq_ao's native safetensors state dict and its quantized model directory."""

from awq_ao.formats.awq_gemm import export_awq, load_awq
from awq_ao.formats.directory import load_quantized, save_quantized
from awq_ao.formats.native import load_quantized_state_dict, load_state_dict, save_state_dict

__all__ = ["export_awq", "load_awq", "load_quantized", "load_quantized_state_dict", "load_state_dict", "save_quantized", "save_state_dict"]
