"""Build a tiny random-weight chat model on disk, for tests and CPU benchmarks.

Nothing can be downloaded in CI, so the tokenizer is trained locally (byte-level BPE, so every
string, JSON included, can be spelled) and the weights are a random ``Qwen2ForCausalLM`` small
enough to run on two CPU cores. vLLM's CPU attention needs ``head_dim == 64``. The model's
answers are noise; structured outputs make them valid JSON anyway, which is what tests check.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    'You are playing a guessing game. Pick a number between 0 and 100.',
    'The winner is closest to two thirds of the average of all guesses.',
    'Answer in JSON: {"reasoning": "short text", "guess": 33}',
    '{"guess": 22.5} {"guess": 0} {"guess": 100} {"guess": 67} {"reasoning": "level one"}',
    'system user assistant persona age occupation education country income gender',
    'Round 1 2 3 4 5 6 7 8 9 10: the average was 41.2 and the target was 27.5.',
    'abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 .,:;!?\'"{}[]()-_+=*/\\',
]


def build_tokenizer(vocab_size: int = 600):  # -> transformers.PreTrainedTokenizerFast
    """Train a byte-level BPE tokenizer on a small built-in corpus and give it a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    path: str | Path,
    *,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 2,
    chat_template: bool = True,
    seed: int = 0,
) -> Path:
    """Write a random-weight Qwen2 chat model and its tokenizer to ``path``; return the path.

    ``chat_template=False`` writes a model without a chat template, for the error-path tests.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if hidden_size // num_heads != 64:
        raise ValueError("vLLM's CPU attention needs hidden_size / num_heads == 64")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not chat_template:
        _strip_chat_template(out)
    logger.info("wrote tiny model (%d params) to %s", model.num_parameters(), out)
    return out


def _strip_chat_template(folder: Path) -> None:
    """Make sure no chat template survives on disk (transformers may write one by default)."""
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))


if __name__ == "__main__":
    import sys

    logging.basicConfig(level=logging.INFO)
    build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-model")
