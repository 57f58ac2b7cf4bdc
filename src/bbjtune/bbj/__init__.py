"""BBj language support: a syntax checker compatible with `bbjcpl -N`, an adapter for the real
compiler, and code extraction from model answers and markdown."""

from .checker import check_file, check_source, check_with
from .diagnostics import Diagnostic
from .extract import CodeBlock, extract_bbj, extract_code_blocks

__all__ = [
    "CodeBlock",
    "Diagnostic",
    "check_file",
    "check_source",
    "check_with",
    "extract_bbj",
    "extract_code_blocks",
]
