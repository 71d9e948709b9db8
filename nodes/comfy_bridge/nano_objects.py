"""The nano model's text encoder and codec as genuine ComfyUI objects (CLIP tokenizer and model, VAE, latent format)."""

from __future__ import annotations

import torch
from torch import nn

import comfy.latent_formats
import comfy.model_management as model_management
import comfy.model_patcher
import comfy.sd

from zerase_core.nano import paths as nano_paths


class NanoLatentFormat(comfy.latent_formats.LatentFormat):
    """The nano codec's latents are already normalised: identity scale, 16 channels (as Z-Image's Flux VAE)."""

    latent_channels = 16


class NanoTokenizer:
    """ComfyUI tokenizer interface over the nano vocabulary (one token per word, no template, no weights)."""

    def __init__(self, embedding_directory=None, tokenizer_data=None):
        from zerase_core.nano.vocab import VOCABULARY

        self.vocabulary = VOCABULARY

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs):
        ids = self.vocabulary.encode(text)
        pairs = [(token, 1.0, index + 1) if return_word_ids else (token, 1.0) for index, token in enumerate(ids)]
        return {"nano": [pairs]}

    def untokenize(self, token_weight_pair):
        return [(pair, self.vocabulary.words[pair[0]]) for pair in token_weight_pair]

    def state_dict(self):
        return {}

    def decode(self, token_ids, skip_special_tokens=True):
        return self.vocabulary.decode(token_ids)


class NanoTextModel(nn.Module):
    """ComfyUI text-encoder interface over the nano text encoder: features (1, L, 128) of the real tokens only."""

    def __init__(self, device="cpu", dtype=None, model_options=None):
        super().__init__()
        from zerase_core.nano.text_encoder import NanoTextEncoder

        with torch.inference_mode(False):
            self.encoder = NanoTextEncoder.load(nano_paths.TEXT_ENCODER)
        self.dtypes = {torch.float32}

    def encode_token_weights(self, tokens):
        ids = [pair[0] for chunk in tokens["nano"] for pair in chunk]
        device = self.encoder.token_embedding.weight.device
        with torch.no_grad():
            features = self.encoder(torch.tensor([ids], device=device))
        return features.float().to(model_management.intermediate_device()), None

    def reset_clip_options(self):
        pass

    def set_clip_options(self, options):
        pass

    def load_sd(self, state_dict):
        return self.encoder.load_state_dict(state_dict, strict=False)


class NanoFirstStage(nn.Module):
    """The nano codec in the VAE's [-1, 1] pixel convention (ComfyUI maps pixels in and out of it)."""

    def __init__(self):
        super().__init__()
        from zerase_core.nano.codec import LatentCodec

        with torch.inference_mode(False):
            self.codec = LatentCodec.load(nano_paths.CODEC).requires_grad_(False)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return (self.codec.encoder(pixels) - self.codec.shift) * self.codec.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.codec.decode_raw(latents / self.codec.scale + self.codec.shift)


class NanoVAE(comfy.sd.VAE):
    """A `comfy.sd.VAE` whose first stage is the nano codec; VAEDecode / VAEEncode use ComfyUI's own code paths."""

    def __init__(self):
        self.memory_used_encode = lambda shape, dtype: 4096 * shape[2] * shape[3] * 4
        self.memory_used_decode = lambda shape, dtype: 4096 * shape[2] * shape[3] * 64 * 4
        self.downscale_ratio = self.upscale_ratio = 8
        self.latent_channels, self.latent_dim, self.output_channels = 16, 2, 3
        self.pad_channel_value = None
        self.process_input = lambda image: image * 2.0 - 1.0
        self.process_output = lambda image: image.add_(1.0).div_(2.0).clamp_(0.0, 1.0)
        self.working_dtypes = [torch.float32]
        self.disable_offload, self.not_video, self.size = True, False, None
        self.downscale_index_formula = self.upscale_index_formula = self.extra_1d_channel = None
        self.crop_input, self.handles_tiling, self.format_encoded = True, False, None
        self.audio_sample_rate = 44100
        self.first_stage_model = NanoFirstStage().eval()
        self.device = model_management.vae_device()
        self.vae_dtype = torch.float32
        self.output_device = model_management.intermediate_device()
        self.patcher = comfy.model_patcher.ModelPatcher(
            self.first_stage_model, load_device=self.device, offload_device=model_management.vae_offload_device()
        )
        self.model_size()
