"""Qwen2.5's real tokenizer, rebuilt offline from Qwen's BPE ranks.

The hub's `Qwen/Qwen2.5-VL-3B-Instruct` tokenizer cannot be downloaded here, but the PyPI
package `dashscope` ships `qwen.tiktoken`: the BPE ranks of Qwen's 151,643 regular tokens.
We fetch that wheel with `pip download --no-deps` (PyPI is reachable; the SDK is never
imported), convert the ranks to a fast tokenizer with transformers' `TikTokenConverter`, and
add Qwen's special tokens at the ids Qwen2.5-VL uses. Token counts and number tokenisation
(one token per digit) then match the real model's.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tokenizers import AddedToken, normalizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from socioreasoner.models.chat_templates import chat_template

logger = logging.getLogger(__name__)

DASHSCOPE_WHEEL = "dashscope==2.0.2"
QWEN_TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
QWEN_NUM_REGULAR_TOKENS = 151_643

# Qwen2's pre-tokenizer pattern: note `\p{N}` (single digits), unlike GPT-4's `\p{N}{1,3}`.
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The special tokens of Qwen2.5-VL, in id order starting at 151643. Their ids must agree with
# `Qwen2_5_VLConfig` (image_token_id=151655, video_token_id=151656, vision_start_token_id=151652).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Added, but not "special" (they are not skipped when decoding), as in Qwen's release.
QWEN_ADDED_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]

# Qwen3's further added tokens (Qwen3-VL: ids 151665-151668, after Qwen2.5's); with them the vocabulary is
# Qwen3-VL's.
QWEN3_ADDED_TOKENS = ["<tool_response>", "</tool_response>", "<think>", "</think>"]

def _cache_dir() -> Path:
    root = os.environ.get("SOCIOREASONER_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "socioreasoner"
    )
    return Path(root)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def qwen_tiktoken_path() -> Path:
    """Path of a verified `qwen.tiktoken`, fetching it from the `dashscope` wheel if needed.

    `SOCIOREASONER_QWEN_TIKTOKEN` may point at a copy; otherwise the cache
    (`$SOCIOREASONER_CACHE` or `~/.cache/socioreasoner`) is used and filled once.
    """
    explicit = os.environ.get("SOCIOREASONER_QWEN_TIKTOKEN")
    path = Path(explicit) if explicit else _cache_dir() / "qwen.tiktoken"
    if path.is_file():
        if _sha256(path) != QWEN_TIKTOKEN_SHA256:
            raise ValueError(f"{path}: checksum does not match Qwen's qwen.tiktoken ({QWEN_TIKTOKEN_SHA256})")
        return path
    if explicit:
        raise FileNotFoundError(f"SOCIOREASONER_QWEN_TIKTOKEN={explicit}: no such file")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("fetching qwen.tiktoken from the %s wheel on PyPI", DASHSCOPE_WHEEL)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, DASHSCOPE_WHEEL]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("dashscope-*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(
                f"could not fetch {DASHSCOPE_WHEEL} to get qwen.tiktoken ({' '.join(cmd)}):\n{result.stderr}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read("dashscope/resources/qwen.tiktoken")
        partial = path.with_suffix(".partial")
        partial.write_bytes(data)
        if _sha256(partial) != QWEN_TIKTOKEN_SHA256:
            partial.unlink()
            raise ValueError(f"qwen.tiktoken from {DASHSCOPE_WHEEL} has an unexpected checksum")
        partial.replace(path)
    return path


def load_bpe_ranks(path: str | Path) -> dict[bytes, int]:
    """Read a `.tiktoken` file (one `base64(token) rank` per line)."""
    ranks = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: expected 'base64-token rank', got {line[:40]!r}") from err
    return ranks


class _QwenTikTokenConverter(TikTokenConverter):
    """transformers' converter, reading the ranks without the `tiktoken` package."""

    @staticmethod
    def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
        return load_bpe_ranks(tiktoken_url)


def build_qwen_tokenizer(tiktoken_file: str | Path | None = None, qwen3: bool = False) -> PreTrainedTokenizerFast:
    """Qwen2.5-VL's tokenizer (`qwen3`: Qwen3-VL's, with Qwen3's four added tokens and its chat template): real
    vocabulary, special tokens at their real ids, chat template."""
    tiktoken_file = Path(tiktoken_file) if tiktoken_file else qwen_tiktoken_path()
    backend = _QwenTikTokenConverter(vocab_file=str(tiktoken_file), pattern=QWEN_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    if backend.get_vocab_size() != QWEN_NUM_REGULAR_TOKENS:
        raise ValueError(f"{tiktoken_file}: expected {QWEN_NUM_REGULAR_TOKENS} tokens, got {backend.get_vocab_size()}")
    # Added to the backend first, in order, so that each lands on Qwen's id.
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    added = QWEN_ADDED_TOKENS + (QWEN3_ADDED_TOKENS if qwen3 else [])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=131072,
        padding_side="left",
    )
    for offset, token in enumerate(QWEN_SPECIAL_TOKENS + added):
        expected = QWEN_NUM_REGULAR_TOKENS + offset
        actual = tokenizer.convert_tokens_to_ids(token)
        if actual != expected:
            raise AssertionError(f"special token {token} got id {actual}, Qwen uses {expected}")
    tokenizer.chat_template = chat_template("qwen3_vl" if qwen3 else "qwen2_5_vl")
    return tokenizer
