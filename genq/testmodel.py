"""A small Llama model with random weights, for tests, the demo and benchmarks.

CI and development machines reach no model hub, so `genq make-test-model DIR` builds
one: a Llama-architecture model (vLLM loads it through the same code path as a real
Llama) and a byte-level BPE tokenizer trained on the Python standard library's sources,
which every machine has. The output reads like any Hugging Face model directory.
"""

from __future__ import annotations

import json
import os
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

__all__ = ["MARKER", "SIZES", "ModelSize", "build_test_model"]

# Written last; its presence with the same parameters means the directory is complete.
MARKER = "genq-test-model.json"
# Bump when the output of a build changes, so older directories get rebuilt.
FORMAT_VERSION = 1

BOS, EOS = "<|bos|>", "<|eos|>"
# Role markers are single special tokens so a chat turn costs a predictable few tokens.
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Enough text for an 8k vocabulary to fill with real merges, little enough that training
# takes a few seconds on two cores.
TRAINING_TEXT_BYTES = 4_000_000


@dataclass(frozen=True)
class ModelSize:
    """The shape of a Llama model; the fields map onto `LlamaConfig`."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 2048


SIZES: dict[str, ModelSize] = {
    # For tests: 721,536 parameters. vLLM's CPU attention takes head sizes of 32 and up,
    # hence 128 / 4 heads rather than 64 / 4: a head size of 16 would not load.
    "tiny": ModelSize(
        hidden_size=128,
        num_layers=2,
        num_heads=4,
        intermediate_size=256,
        vocab_size=3072,
    ),
    # For benchmarks: big enough that the forward pass, not Python overhead, dominates,
    # small enough for two cores. 1376 is 8/3 x 512 rounded up to a multiple of 32, the
    # Llama ratio. 29,499,904 parameters (embeddings tied with the LM head).
    "bench": ModelSize(
        hidden_size=512,
        num_layers=8,
        num_heads=8,
        intermediate_size=1376,
        vocab_size=8192,
    ),
}


def build_test_model(
    out_dir: str | Path,
    *,
    size: str = "tiny",
    seed: int = 0,
    vocab_size: int | None = None,
) -> Path:
    """Build the model into `out_dir` (created if missing) and return its path.

    Returns at once if `out_dir` already holds a complete build with the same
    parameters.
    `vocab_size` overrides the preset's. The same arguments give the same weights.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {sorted(SIZES)}")
    spec = SIZES[size]
    if vocab_size is not None:
        spec = replace(spec, vocab_size=vocab_size)
    # The 256-byte alphabet, the special tokens and some merges need room.
    if spec.vocab_size < 512:
        raise ValueError(f"vocab_size must be at least 512, got {spec.vocab_size}")
    out = Path(out_dir)
    params = {"format": FORMAT_VERSION, "size": size, "seed": seed, **asdict(spec)}
    if _read_marker(out) == params:
        return out

    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).unlink(missing_ok=True)
    # Build beside the target, then move file by file: a crash leaves no marker, and two
    # concurrent builders (pytest-xdist) write identical files, so either may win.
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as tmp:
        _build_tokenizer(spec).save_pretrained(tmp)
        _save_quietly(_build_model(spec, seed), tmp)
        for path in sorted(Path(tmp).iterdir()):
            # save_pretrained writes the weights 0600; workers may run as another user.
            path.chmod(0o644)
            os.replace(path, out / path.name)
    (out / MARKER).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    return out


def _read_marker(out: Path) -> dict[str, object] | None:
    try:
        return json.loads((out / MARKER).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _build_model(spec: ModelSize, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        # Tied, as small Llamas (3.2 1B/3B) are: a big share of a small model would
        # otherwise be a second embedding matrix.
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        # bfloat16: vLLM on CPU runs float32 checkpoints as bfloat16 anyway (its "auto"
        # dtype downcasts), its CPU kernels are fastest in bf16 (AVX512-BF16, AMX), and
        # the files are half the size.
        dtype="bfloat16",
    )
    # Initialise in float32 from a fixed seed (CPU RNG is deterministic), then cast.
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    model.bfloat16()  # in place
    return model


def _save_quietly(model: LlamaForCausalLM, directory: str) -> None:
    # A one-shard progress bar is noise in CLI and test output.
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(directory)
    finally:
        if enabled:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _build_tokenizer(spec: ModelSize) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # Special tokens first, so BOS and EOS get ids 1 and 2 as the model config says.
    special = ["<|pad|>", BOS, EOS, *ROLE_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer=trainer)
    # Prepend BOS to encoded text as Llama tokenizers do. The chat template writes its
    # own BOS, so a rendered chat must be encoded with add_special_tokens=False, as with
    # Llama; vLLM's chat renderer does that.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 1)]
    )
    assert tok.token_to_id(BOS) == 1 and tok.token_to_id(EOS) == 2
    # transformers ships no types for its tokenizer constructors.
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token="<|pad|>",
        additional_special_tokens=ROLE_TOKENS,
        chat_template=CHAT_TEMPLATE,
        model_max_length=spec.max_position_embeddings,
    )


def _training_text() -> Iterator[str]:
    """The standard library's own modules, in a fixed order, up to a byte budget."""
    stdlib = sysconfig.get_paths()["stdlib"]
    # Installed packages (often under the stdlib directory) and the test suites differ
    # between machines far more than the modules do, and would only slow the walk.
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
    files: list[Path] = []
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in skip]
        files.extend(Path(root, n) for n in names if n.endswith(".py"))
    files.sort()
    budget = TRAINING_TEXT_BYTES
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")[:budget]
        budget -= len(text)
        yield text
        if budget <= 0:
            return
