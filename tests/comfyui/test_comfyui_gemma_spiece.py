"""The Gemma tokenizer inside a ComfyUI text-encoder file, read by the core and by ComfyUI: one tiny Gemma-2 file
(`model.` weights + `spiece_model`, the serialized SentencePiece model, as gemma_2_2b_fp16.safetensors) loaded the
way comfy/sd.py does (load_torch_file, tokenizer_data["spiece_model"]) into ComfyUI's own Gemma2_2B/LuminaTokenizer
classes at tiny size. CLIPTextEncodeLumina2's tokens equal the core's token ids exactly; its conditioning equals the
core's GemmaConditioner features (transformers' Gemma-2 vs ComfyUI's: same weights, fp32; transformers soft-caps
attention logits at 50 and ComfyUI does not: ≤ 1e-5 relative, ~3e-7 measured)."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("sentencepiece", reason="sentencepiece is not installed in ComfyUI's venv")
transformers = pytest.importorskip("transformers", reason="transformers is not installed in ComfyUI's venv")

HIDDEN, LAYERS = 48, 3
PROMPTS = ["a painting by Van Gogh", "a photo of a cat, oil painting of a starry night", "ünïcödé 2024 and 🐈", ""]


@pytest.fixture(scope="module")
def gemma_file(tmp_path_factory):
    from gemma_spiece import piece_count, save_gemma_file, train_spiece
    proto = train_spiece()
    torch.manual_seed(7)
    config = transformers.Gemma2Config(vocab_size=piece_count(proto), hidden_size=HIDDEN, intermediate_size=64,
                                       num_hidden_layers=LAYERS, num_attention_heads=2, num_key_value_heads=1)
    encoder = transformers.Gemma2Model(config)
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if "norm" in name:
                parameter.normal_(0.0, 0.1)
    return save_gemma_file(tmp_path_factory.mktemp("gemma") / "gemma_2_tiny.safetensors", encoder.eval(), proto)


def comfy_clip(path):
    """ComfyUI's CLIP over the file, as comfy/sd.py builds Lumina-2's: the tokenizer from the file's spiece_model,
    ComfyUI's Gemma2_2B text model (at the file's tiny widths) loading the rest."""
    import comfy.sd
    import comfy.supported_models_base
    import comfy.text_encoders.llama
    import comfy.text_encoders.lumina2
    import comfy.utils
    from comfy import sd1_clip
    weights = comfy.utils.load_torch_file(str(path), safe_load=True)
    vocab = weights["model.embed_tokens.weight"].shape[0]

    class TinyGemma(sd1_clip.SDClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None, **_):
            super().__init__(device=device, layer="hidden", layer_idx=-2, dtype=dtype,
                             textmodel_json_config={"hidden_size": HIDDEN, "intermediate_size": 64,
                                                    "num_hidden_layers": LAYERS, "num_attention_heads": 2,
                                                    "num_key_value_heads": 1, "vocab_size": vocab},
                             special_tokens={"start": 2, "pad": 0}, layer_norm_hidden_state=False,
                             model_class=comfy.text_encoders.llama.Gemma2_2B, enable_attention_masks=True,
                             return_attention_masks=True, model_options=model_options or {})

    class TinyTE(sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options=None):
            super().__init__(device=device, dtype=dtype, name="gemma2_2b", clip_model=TinyGemma,
                             model_options=model_options or {})

    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.lumina2.LuminaTokenizer, TinyTE)
    clip = comfy.sd.CLIP(target, tokenizer_data={"spiece_model": weights.get("spiece_model")},
                         model_options={"dtype": torch.float32})
    missing, _ = clip.load_sd({key: value for key, value in weights.items() if key != "spiece_model"})
    assert not [key for key in missing if "embed_tokens" in key or "layers" in key], missing
    return clip


def test_comfyuis_lumina2_encoding_equals_the_cores_from_the_same_file(comfy, gemma_file):
    from comfy_extras.nodes_lumina2 import CLIPTextEncodeLumina2

    from zerase_core.real.gemma import gemma_conditioner
    from zerase_core.real.gemma_tokenizer import SpieceGemmaTokenizer
    from zerase_core.real.sources import ModelSource
    clip = comfy_clip(gemma_file)
    core = gemma_conditioner(ModelSource(kind="lumina2", dit=gemma_file, text_encoder=gemma_file))
    assert isinstance(core.tokenizer, SpieceGemmaTokenizer)
    for prompt in PROMPTS[:3]:
        text = core.text(prompt)                                # the "superior" system prompt
        comfy_ids = [token for token, _ in clip.tokenize(text)["gemma2_2b"][0]]
        assert comfy_ids == core._tokens(prompt)["input_ids"], prompt
        with torch.inference_mode():
            conditioning = CLIPTextEncodeLumina2.execute(clip, prompt, "superior")[0]
        theirs = conditioning[0][0][0].float()
        features, lengths = core.encode([prompt])
        ours = features[0, :int(lengths[0])]
        assert theirs.shape == ours.shape, (theirs.shape, ours.shape)
        assert (theirs - ours).norm() <= 1e-5 * ours.norm(), (prompt, float((theirs - ours).norm() / ours.norm()))
    # the bare empty prompt (a negative) is tokenized alike too: BOS alone
    assert [token for token, _ in clip.tokenize(PROMPTS[3])["gemma2_2b"][0]] == core._tokens("")["input_ids"] == [2]
