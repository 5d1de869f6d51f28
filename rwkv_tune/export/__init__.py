"""Model exports for other runtimes: GGUF for llama.cpp (`export_gguf`)."""

from rwkv_tune.export.gguf_file import DTYPES, GGUFReport, export_gguf

__all__ = ["DTYPES", "GGUFReport", "export_gguf"]
