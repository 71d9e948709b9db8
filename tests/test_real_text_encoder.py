"""Z-Image prompt conditioning against diffusers' ZImagePipeline.encode_prompt: a tiny random Qwen3 built here, the
real Qwen tokenizer files of ComfyUI (comfy/text_encoders/qwen25_tokenizer) with a Qwen3 chat template, fp32."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install -e \".[real]\")")
diffusers = pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e \".[real]\")")

from zerase_core.real.text_encoder import COMFY_TEMPLATE, QwenConditioner, load_qwen3, load_tokenizer  # noqa: E402

_REPOSITORY = Path(__file__).resolve().parents[1]
_COMFYUI = [Path(os.environ["COMFYUI_PATH"])] if os.environ.get("COMFYUI_PATH") else []
_COMFYUI += [_REPOSITORY.parent / "shared" / "comfyui", _REPOSITORY.parents[1] / "shared" / "comfyui"]
TOKENIZER = next((path / "comfy" / "text_encoders" / "qwen25_tokenizer" for path in _COMFYUI
                  if (path / "comfy" / "text_encoders" / "qwen25_tokenizer").is_dir()),
                 _COMFYUI[0] / "comfy" / "text_encoders" / "qwen25_tokenizer")
# Qwen3's chat template for user messages (what Z-Image's tokenizer folder carries); ComfyUI's qwen25 folder has
# Qwen2.5's, which adds a system prompt
QWEN3_TEMPLATE = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content"
                  " + '<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
                  "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
                  "{%- endif %}{%- endif %}")
PROMPTS = ["a photo of a cat", "Van Gogh's starry night over a harbour, oil painting", ""]


@pytest.fixture(scope="module")
def tokenizer():
    if not TOKENIZER.is_dir():
        pytest.skip(f"no Qwen tokenizer files at {TOKENIZER} (set COMFYUI_PATH to a ComfyUI checkout)")
    loaded = load_tokenizer(TOKENIZER)
    loaded.chat_template = QWEN3_TEMPLATE
    return loaded


def tiny_qwen3(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(vocab_size=151936, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      tie_word_embeddings=True, rope_theta=1_000_000.0,
                                      rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
                                      max_position_embeddings=40960)
    model = transformers.Qwen3Model(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(1.0, 0.1)
    return model.eval().requires_grad_(False)


def relative(a, b):
    return ((a - b).norm() / b.norm()).item()


def pipeline_features(tokenizer, model, prompts):
    pipeline = diffusers.ZImagePipeline(scheduler=None, vae=None, text_encoder=model, tokenizer=tokenizer,
                                        transformer=None)
    embeddings, _ = pipeline.encode_prompt(list(prompts), device="cpu", do_classifier_free_guidance=False)
    return embeddings


def test_features_equal_the_pipelines_prompt_encoding(tokenizer):
    model = tiny_qwen3()
    expected = pipeline_features(tokenizer, model, PROMPTS)
    for template in (None, COMFY_TEMPLATE):     # the chat template and ComfyUI's fixed one give the same tokens
        features, lengths = QwenConditioner(tokenizer, model, template).encode(PROMPTS)
        assert lengths.tolist() == [row.shape[0] for row in expected]
        for row, length, reference in zip(features, lengths, expected):
            assert relative(row[:length], reference.float()) <= 1e-5
        assert torch.all(features[2, lengths[2]:] == 0)      # batch padding rows are zero (masked downstream)


def test_hidden_layer_matters_so_the_parity_is_not_vacuous(tokenizer):
    model = tiny_qwen3()
    expected = pipeline_features(tokenizer, model, PROMPTS[:1])[0]
    ids = tokenizer(COMFY_TEMPLATE.format(PROMPTS[0]), return_tensors="pt").input_ids
    last = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
    assert relative(last, expected) > 1e-2


def test_comfy_single_file_and_folder_load_memory_mapped(tokenizer, tmp_path):
    from safetensors.torch import save_file
    model = tiny_qwen3(1)
    single = tmp_path / "qwen_3_tiny.safetensors"
    save_file({f"model.{key}": value.contiguous() for key, value in model.state_dict().items()}, str(single))
    model.save_pretrained(tmp_path / "text_encoder")
    expected = QwenConditioner(tokenizer, model).encode(PROMPTS[:2])[0]
    for path in (single, tmp_path / "text_encoder"):
        loaded = load_qwen3(path)
        assert loaded.config.num_key_value_heads == 2 and loaded.config.num_hidden_layers == 3
        assert torch.equal(QwenConditioner(tokenizer, loaded).encode(PROMPTS[:2])[0], expected)
    bf16 = tmp_path / "qwen_bf16.safetensors"
    save_file({f"model.{key}": value.to(torch.bfloat16).contiguous() for key, value in model.state_dict().items()},
              str(bf16))
    assert load_qwen3(bf16).embed_tokens.weight.dtype == torch.bfloat16


def test_keyword_rows_are_the_keywords_tokens(tokenizer):
    conditioner = QwenConditioner(tokenizer, tiny_qwen3(), COMFY_TEMPLATE)
    prompt = PROMPTS[1]
    ids = tokenizer(COMFY_TEMPLATE.format(prompt)).input_ids
    rows = conditioner.keyword_positions(prompt, "Van Gogh")
    assert len(rows) >= 2 and rows == list(range(rows[0], rows[-1] + 1))
    assert tokenizer.decode([ids[row] for row in rows]).strip() == "Van Gogh"
    assert conditioner.keyword_positions(prompt, "cat") == []
    conditioner.release()
    with pytest.raises(RuntimeError, match="released"):
        conditioner.encode(["a cat"])
