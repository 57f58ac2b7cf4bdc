"""Qwen2.5-Coder's fill-in-the-middle (FIM) format: the text an editor sends, and what training shows.

One place for the layout, shared by training (stage 1 turns documents into FIM samples), evaluation
(the FIM suite's prompts) and export (the Modelfile's completion template).

Prefix-suffix-middle (PSM), the form editors send (Continue's Qwen template, llama.cpp's /infill):

    <|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}<|endoftext|>

This is the file-level layout of the Qwen2.5-Coder Technical Report (arXiv:2409.12186, section 3.1:
"<|fim_prefix|>{code_pre}<|fim_suffix|>{code_suf}<|fim_middle|>{code_mid}<|endoftext|>"), and the
prompt of the Qwen2.5-Coder README ("file-level code completion (fill-in-the-middle)"). The model
ends the middle with <|endoftext|>, so the middle is trained up to and including that token.

Suffix-prefix-middle (SPM): the report names no SPM form for Qwen, so we use the one StarCoder's
training code uses (bigcode's Megatron-LM, and Megatron-Core's GPTFIMDataset, whose README writes it
"[prefix_tok, suffix_tok] suffix [middle_tok] prefix middle"), which is "SPM variant 2" of Bavarian
et al. 2022 (arXiv:2207.14255, appendix D):

    <|fim_prefix|><|fim_suffix|>{suffix}<|fim_middle|>{prefix}{middle}<|endoftext|>

Its point: the prefix and the middle are one continuous text after <|fim_middle|>, so the model
learns to continue the prefix while knowing the suffix; the tokens are the same as PSM's.

Repository level (the report's section 3.1, repo-level pretraining): files of one source tree
before the file with the hole, each after <|file_sep|> and its path:

    <|repo_name|>{name}\\n<|file_sep|>{path1}\\n{content1}\\n<|file_sep|>{path2}\\n<|fim_prefix|>...
"""

from __future__ import annotations

from dataclasses import dataclass

from bbjtune.models.chat_template import ENDOFTEXT, IM_END, IM_START

FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_PAD = "<|fim_pad|>"
REPO_NAME = "<|repo_name|>"
FILE_SEP = "<|file_sep|>"
FIM_TOKENS = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, FIM_PAD, REPO_NAME, FILE_SEP)

# What ends a completion: the model's own end (<|endoftext|>), and any structure token, which means
# the model has left the middle (Continue stops on the same set for Qwen2.5-Coder).
FIM_STOP_TOKENS = (ENDOFTEXT, *FIM_TOKENS, IM_START, IM_END)


def fim_prompt(prefix: str, suffix: str) -> str:
    """The PSM prompt an editor sends: the model answers with the middle, then <|endoftext|>."""
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}"


def psm_sample(prefix: str, middle: str, suffix: str) -> str:
    """A PSM training text (without the closing <|endoftext|>, which stage 1 adds to every document)."""
    return fim_prompt(prefix, suffix) + middle


def spm_sample(prefix: str, middle: str, suffix: str) -> str:
    """An SPM training text (StarCoder's layout, see the module docstring)."""
    return f"{FIM_PREFIX}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{prefix}{middle}"


@dataclass(frozen=True)
class RepoFile:
    path: str
    text: str


def repo_context(repo: str, files: list[RepoFile], path: str) -> str:
    """The repository-level lead-in: other files of the tree, then the path of the file with the hole."""
    parts = [f"{REPO_NAME}{repo}\n"]
    parts += [
        f"{FILE_SEP}{f.path}\n{f.text if f.text.endswith(chr(10)) else f.text + chr(10)}" for f in files
    ]
    parts.append(f"{FILE_SEP}{path}\n")
    return "".join(parts)


def contains_fim_token(text: str) -> bool:
    """True when a text holds a FIM structure token literally (it would be read as one)."""
    return any(t in text for t in FIM_TOKENS)
