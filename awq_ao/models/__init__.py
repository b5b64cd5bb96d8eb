"""gpt-fast-style models (static KV cache) and their loaders."""

from awq_ao.models.llama import ModelArgs, Transformer
from awq_ao.models.loading import from_hf_model, load_checkpoint, load_gguf, load_hf_directory, load_hf_model

__all__ = ["ModelArgs", "Transformer", "from_hf_model", "load_checkpoint", "load_gguf", "load_hf_directory",
           "load_hf_model"]
