"""Checkpoint formats: awq_ao's native safetensors state dict."""

from awq_ao.formats.native import load_quantized_state_dict, load_state_dict, save_state_dict

__all__ = ["load_quantized_state_dict", "load_state_dict", "save_state_dict"]
