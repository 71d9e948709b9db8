"""The one place that touches ComfyUI internals: model patchers, injections, wrappers, folders, progress, sampling.

Flow of a gated erasure inside ComfyUI (comfyui-notes §C):
    MODEL.clone()  +  PatcherInjection(inject = AdapterSet.attach, eject = AdapterSet.detach)  on `diffusion_model`
                   +  DIFFUSION_MODEL wrapper:  TokenLayout.from_shapes(context len, latent H×W, patch, pad multiple)
                      made active for the forward, so the gated adapters know which rows are text
The input MODEL is never changed: every node works on a clone, and the adapters are attached only while the clone
is the patcher ComfyUI has loaded. Training runs on the MODEL's own NextDiT (no second copy of the weights) with
inference mode off, gradients on and `comfy.model_management.in_training` set (reset in `finally`).

Nothing in `zerase_core` imports ComfyUI; the node files import only `comfy_api.latest` and this module.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch
from torch import nn

import comfy.latent_formats
import comfy.ldm.lumina.model
import comfy.model_management as model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sample
import comfy.sd
import comfy.supported_models
import comfy.supported_models_base
import comfy.utils
import folder_paths

from zerase_core.adapters import AdapterSet
from zerase_core.checkpoint import UnsupportedModelError, detect_architecture, fingerprint, infer_config, \
    normalize_keys, read_state_dict
from zerase_core.config import DiTConfig
from zerase_core.erasure_file import ErasureFileError, ErasureInfo, read_erasure
from zerase_core.layout import TokenLayout, active_layout
from zerase_core.model import AttentionCapture, keyword_attention
from zerase_core.nano import paths as nano_paths

from .. import names
from ..ids import MODELS_FOLDER, TRAIN_EVENT

logger = logging.getLogger(__name__)

BASE_ATTACHMENT = "zerase.base"          # BaseInfo of a MODEL built by LoadSingleStreamDiT
ERASURES_ATTACHMENT = "zerase.erasures"  # the ErasureEntry tuple a MODEL carries
INJECTION_KEY = "zerase"
TRAINING_INJECTION_KEY = "zerase.training"
WRAPPER_KEY = "zerase.layout"

# ComfyUI's model-config class name -> what it is, for refusals (notes §A1, checkpoint_keys._FOREIGN).
_REFUSED = {
    "Flux": "a dual-stream Flux model", "FluxInpaint": "a dual-stream Flux model", "FluxSchnell": "a dual-stream "
    "Flux model", "Flux2": "a dual-stream Flux.2 model", "Chroma": "a dual-stream Chroma (Flux) model",
    "SD3": "a dual-stream SD3 (MMDiT) model", "QwenImage": "a dual-stream Qwen-Image model",
    "HiDream": "a HiDream model", "AuraFlow": "an AuraFlow model", "PixArtAlpha": "a PixArt model",
    "Lumina2": "Lumina-Image-2.0 (NextDiT without Z-Image modulation)",
    "ZImagePixelSpace": "pixel-space Z-Image (not supported yet)",
}


# ---------------------------------------------------------------- folders


def register_folders() -> None:
    """The pack's models folder (`models/zerase`, .safetensors only), registered with folder_paths."""
    if MODELS_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[MODELS_FOLDER] = (
            [os.path.join(folder_paths.models_dir, MODELS_FOLDER)], {names.SUFFIX})
    os.makedirs(folder_paths.get_folder_paths(MODELS_FOLDER)[0], exist_ok=True)


def erasure_files() -> list[str]:
    """Erasure files directly inside the pack's folders (subfolders are not offered)."""
    register_folders()
    return [name for name in folder_paths.get_filename_list(MODELS_FOLDER) if "/" not in name and "\\" not in name]


def save_path(name: str) -> Path:
    register_folders()
    return names.resolve_inside(folder_paths.get_folder_paths(MODELS_FOLDER)[0], name, "save_name")


def existing_erasure(name: str, what: str) -> Path:
    register_folders()
    problem = None
    for folder in folder_paths.get_folder_paths(MODELS_FOLDER):
        try:
            return names.resolve_inside(folder, name, what, must_exist=True)
        except names.UnsafeNameError as error:
            problem = error
    raise problem if problem is not None else names.UnsafeNameError(f"{what} {name!r}: no erasure folder")


def diffusion_model_files() -> list[str]:
    return [name for name in folder_paths.get_filename_list("diffusion_models") if name.endswith(".safetensors")]


# ---------------------------------------------------------------- which models are accepted


@dataclass(frozen=True)
class BaseInfo:
    config: DiTConfig
    nano: bool


def zimage_network(model) -> comfy.ldm.lumina.model.NextDiT:
    """The Z-Image NextDiT inside a MODEL, or ValueError naming what the MODEL is instead."""
    base = getattr(model, "model", None)
    network = getattr(base, "diffusion_model", None)
    if network is None:
        raise ValueError(f"expected a MODEL (a ComfyUI ModelPatcher), got {type(model).__name__}")
    kind = type(getattr(base, "model_config", None)).__name__
    unet = getattr(getattr(base, "model_config", None), "unet_config", {}) or {}
    if isinstance(network, comfy.ldm.lumina.model.NextDiTPixelSpace) or kind == "ZImagePixelSpace":
        raise ValueError("this MODEL is pixel-space Z-Image (dec_net), which ZErase does not support yet; use "
                         "text-to-image Z-Image / Z-Image-Turbo")
    if not isinstance(network, comfy.ldm.lumina.model.NextDiT):
        what = _REFUSED.get(kind) or (f"a U-Net ({kind})" if "UNet" in type(network).__name__ else
                                      f"{kind} ({type(network).__name__})")
        raise ValueError(f"this MODEL is {what}; ZErase erases concepts from single-stream Z-Image models only "
                         f"(load Z-Image / Z-Image-Turbo, or the bundled nano model)")
    if getattr(network, "siglip_embedder", None) is not None:
        raise ValueError("this MODEL is Z-Image Omni (siglip_embedder, image-conditioned), not supported yet")
    if not unet.get("z_image_modulation", False) or getattr(network, "cap_pad_token", None) is None:
        raise ValueError(f"this MODEL is {_REFUSED['Lumina2']} ({kind}); ZErase supports Z-Image only. ComfyUI "
                         f"recognises a Z-Image file only at width 3840; smaller Z-Image files load through "
                         f"LoadSingleStreamDiT when they carry ZErase's config metadata")
    return network


def base_info(model) -> BaseInfo:
    attached = model.get_attachment(BASE_ATTACHMENT)
    if attached is not None:
        return attached
    zimage_network(model)
    unet = model.model.model_config.unet_config
    config = DiTConfig(
        dim=unet["dim"], n_layers=unet["n_layers"], n_refiner_layers=unet.get("n_refiner_layers", 2),
        n_heads=unet["n_heads"], cap_feat_dim=unet["cap_feat_dim"], in_channels=unet["in_channels"],
        patch_size=unet["patch_size"], axes_dims=tuple(unet["axes_dims"]), axes_lens=tuple(unet["axes_lens"]),
        rope_theta=float(unet["rope_theta"]), time_scale=float(unet["time_scale"]),
        norm_eps=float(unet.get("norm_eps", 1e-5)), ffn_multiple_of=unet.get("multiple_of", 256),
        ffn_dim_multiplier=float(unet["ffn_dim_multiplier"]), pad_tokens_multiple=unet.get("pad_tokens_multiple") or 1,
        shift=float(model.model.model_sampling.shift))
    return BaseInfo(config, nano=False)


def describe_layout(model) -> str:
    info = base_info(model)
    config = info.config
    network = zimage_network(model)
    return (f"{'nano ' if info.nano else ''}Z-Image NextDiT: dim {config.dim}, {config.n_layers} joint layers, "
            f"{config.n_refiner_layers}+{config.n_refiner_layers} refiners, {config.n_heads} heads, fused "
            f"attention.qkv; joint sequence [text padded to {network.pad_tokens_multiple or 1} | image "
            f"(H/{config.patch_size})·(W/{config.patch_size}) tokens padded to {network.pad_tokens_multiple or 1}]; "
            f"ZErase adapters add their delta at text rows only (image rows see the frozen W)")


# ---------------------------------------------------------------- the nano model as genuine ComfyUI objects


class NanoLatentFormat(comfy.latent_formats.LatentFormat):
    """The nano codec's latents are already normalised: identity scale, 16 channels (as Z-Image's Flux VAE)."""
    latent_channels = 16


def _unet_config(config: DiTConfig) -> dict:
    return dict(image_model="lumina2", patch_size=config.patch_size, in_channels=config.in_channels, dim=config.dim,
                cap_feat_dim=config.cap_feat_dim, n_layers=config.n_layers, n_refiner_layers=config.n_refiner_layers,
                qk_norm=True, n_heads=config.n_heads, n_kv_heads=config.n_heads, multiple_of=config.ffn_multiple_of,
                ffn_dim_multiplier=config.ffn_dim_multiplier, norm_eps=config.norm_eps,
                axes_dims=list(config.axes_dims), axes_lens=list(config.axes_lens), rope_theta=config.rope_theta,
                z_image_modulation=True, time_scale=config.time_scale, pad_tokens_multiple=config.pad_tokens_multiple)


def build_zimage_patcher(config: DiTConfig, state_dict: dict[str, torch.Tensor], nano: bool,
                         dtype: torch.dtype = torch.float32):
    """A genuine ComfyUI Z-Image model (`model_base.Lumina2` holding a NextDiT) from our config and weights.

    Built with inference mode off, so the weights are normal tensors a training node can backpropagate through.
    """
    model_config = comfy.supported_models.ZImage(_unet_config(config))
    model_config.sampling_settings = {"multiplier": 1.0, "shift": config.shift}
    model_config.set_inference_dtype(dtype, None)
    if nano:
        model_config.latent_format = NanoLatentFormat()
    with torch.inference_mode(False):
        model = model_config.get_model({}, "")
        weights = {key: value.to(dtype) if value.is_floating_point() else value for key, value in state_dict.items()}
        missing, unexpected = model.diffusion_model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"the weights do not fit ComfyUI's NextDiT: missing {missing[:4]}, unexpected {unexpected[:4]}")
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=model_management.get_torch_device(),
                                               offload_device=model_management.unet_offload_device())
    patcher.set_attachments(BASE_ATTACHMENT, BaseInfo(config, nano))
    return patcher


def _nano_patcher(disable_dynamic: bool = False):
    state, metadata = read_state_dict(nano_paths.DIT)
    state = normalize_keys(state)
    patcher = build_zimage_patcher(infer_config(state, metadata), state, nano=True)
    patcher.cached_patcher_init = (_nano_patcher, ())
    return patcher


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

    def __init__(self):  # noqa: D401 - the base __init__ detects VAEs from state-dict keys; set what it would
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
        self.patcher = comfy.model_patcher.ModelPatcher(self.first_stage_model, load_device=self.device,
                                                        offload_device=model_management.vae_offload_device())
        self.model_size()


def load_nano():
    """(MODEL, CLIP, VAE) of the bundled nano world, as objects stock ComfyUI nodes accept."""
    missing = [path.name for path in (nano_paths.DIT, nano_paths.TEXT_ENCODER, nano_paths.CODEC) if not path.exists()]
    if missing:
        raise FileNotFoundError(f"nano weights missing from {nano_paths.WEIGHTS}: {missing}; reinstall ZErase or "
                                f"train them with `python -m zerase_core.nano.train` (see README)")
    patcher = _nano_patcher()
    target = comfy.supported_models_base.ClipTarget(NanoTokenizer, NanoTextModel)
    clip = comfy.sd.CLIP(target, model_options={"load_device": torch.device("cpu"),
                                                "offload_device": torch.device("cpu"), "dtype": torch.float32})
    return patcher, clip, NanoVAE()


def _header_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Keys and shapes of a safetensors file as meta tensors (nothing is read but the header)."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        return {key: torch.empty(handle.get_slice(key).get_shape(), device="meta") for key in handle.keys()}


def load_diffusion_file(name: str):
    """A `diffusion_models` file: refused unless it is Z-Image, then loaded by ComfyUI's own loader."""
    if not name.endswith(".safetensors"):
        raise ValueError(f"{name} is not a .safetensors file; ZErase loads safetensors only")
    path = Path(folder_paths.get_full_path_or_raise("diffusion_models", name))
    try:
        detect_architecture(_header_tensors(path))
    except UnsupportedModelError as error:
        raise ValueError(f"{name}: {error}") from None
    from safetensors import safe_open
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
    stated = DiTConfig.from_metadata(metadata)
    if stated is not None and stated.dim != 3840:
        # ComfyUI's detector recognises Z-Image only at dim 3840 (notes §A5); build smaller ones ourselves.
        state, _ = read_state_dict(path)
        return build_zimage_patcher(stated, normalize_keys(state), nano=False)
    model = comfy.sd.load_diffusion_model(str(path))
    zimage_network(model)
    return model


# ---------------------------------------------------------------- erasures on a MODEL


@dataclass(frozen=True)
class ErasureData:
    """The ERASURE edge type: a finished erasure's metadata and tensors (and the file it was saved to)."""
    info: ErasureInfo
    tensors: dict[str, torch.Tensor] = field(repr=False)
    path: Path | None = None

    @classmethod
    def from_file(cls, path: Path) -> "ErasureData":
        info, tensors, _ = read_erasure(path)
        if info.partial:
            raise ErasureFileError(f"{path.name} is a partial erasure ({info.steps_done}/{info.steps_total} steps); "
                                   f"finish it with ZEraseTrain's resume_from before applying it")
        if info.method == "uce-text":
            raise ErasureFileError(f"{path.name} is a uce-text weight edit; export it with `python -m zerase_core "
                                   f"export-lora` and load it with LoraLoaderModelOnly")
        return cls(info, tensors, path)


@dataclass(frozen=True)
class ErasureEntry:
    erasure: ErasureData
    strength: float


def _adapters_for(network: nn.Module, entry: ErasureEntry, allow_other_base: bool) -> AdapterSet:
    info = entry.erasure.info
    label = entry.erasure.path.name if entry.erasure.path is not None else "the ERASURE input"
    found = fingerprint(network)
    if found != info.base_fingerprint and not allow_other_base:
        raise ErasureFileError(f"{label} was trained on base model {info.base_fingerprint}, but this MODEL's "
                               f"fingerprint is {found}; turn on allow_other_base to apply it anyway (e.g. to a "
                               f"fine-tune of the same base; the erasure strength may differ)")
    with torch.inference_mode(False):
        try:
            adapters = AdapterSet(network, info.adapter_config())
            adapters.import_tensors(entry.erasure.tensors)
        except ValueError as error:
            raise ErasureFileError(f"{label} does not fit this MODEL: {error}") from None
    adapters.set_strength(entry.strength)
    return adapters.requires_grad_(False)


class ErasureInjection:
    """inject/eject of a PatcherInjection: attach the adapter sets to the patcher's NextDiT, detach in reverse.

    Idempotent in both directions, because ComfyUI may eject a patcher that a clone already ejected.
    """

    def __init__(self, sets: Sequence[AdapterSet]):
        self.sets = list(sets)

    def inject(self, patcher) -> None:
        network = patcher.model.diffusion_model
        for adapters in self.sets:
            if not adapters.attached:
                adapters.to(patcher.load_device)
                adapters.attach(network)

    def eject(self, patcher) -> None:
        for adapters in reversed(self.sets):
            if adapters.attached:
                adapters.detach()

    def patcher_injection(self):
        return comfy.patcher_extension.PatcherInjection(inject=self.inject, eject=self.eject)


def _layout_wrapper(executor, x, timesteps, context, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: the token layout of this forward, from shapes only, for the gated adapters."""
    network = executor.class_obj
    if kwargs.get("ref_latents"):
        raise ValueError("ZErase adapters do not support reference latents (Z-Image Omni / edit conditioning)")
    layout = TokenLayout.from_shapes([context.shape[1]] * x.shape[0], x.shape[-2:], network.patch_size,
                                     network.pad_tokens_multiple or 1)
    with active_layout(layout):
        return executor(x, timesteps, context, *args, **kwargs)


def with_erasures(model, entries: Sequence[ErasureEntry], allow_other_base: bool = False):
    """A clone of MODEL carrying its existing erasures plus `entries` (gated, not merged)."""
    patcher = model.clone()
    network = zimage_network(patcher)
    every = tuple(patcher.get_attachment(ERASURES_ATTACHMENT) or ()) + tuple(entries)
    sets = [_adapters_for(network, entry, allow_other_base) for entry in every]
    patcher.set_injections(INJECTION_KEY, [ErasureInjection(sets).patcher_injection()])
    patcher.set_attachments(ERASURES_ATTACHMENT, every)
    patcher.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, _layout_wrapper)
    return patcher


def erasures_of(model) -> tuple[ErasureEntry, ...]:
    return tuple(model.get_attachment(ERASURES_ATTACHMENT) or ())


def with_strength_scale(model, scale: float):
    """A clone whose erasures all run at `scale` × their strength (ErasureCompare's sweep)."""
    entries = erasures_of(model)
    base = model.clone()
    base.remove_injections(INJECTION_KEY)
    base.set_attachments(ERASURES_ATTACHMENT, ())
    return with_erasures(base, [ErasureEntry(e.erasure, e.strength * scale) for e in entries], allow_other_base=True)


# ---------------------------------------------------------------- training inside the graph


def read_resume(path: Path, nano: bool):
    """`training.resume_state` with normal (not inference-mode) tensors: the optimizer updates them in place."""
    from .. import training as node_training
    with torch.inference_mode(False):
        return node_training.resume_state(path, nano)


def _make_trainable(network: nn.Module) -> None:
    """Replace inference-mode weights by normal tensors, one tensor at a time (values unchanged, no second copy).

    Weights created inside ComfyUI's `torch.inference_mode()` cannot be saved for backward, and the adapters'
    gradients must flow back through every later frozen layer.
    """
    for module in network.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None and parameter.is_inference():
                module._parameters[name] = nn.Parameter(parameter.clone(), requires_grad=False)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.is_inference():
                module._buffers[name] = buffer.clone()


@dataclass
class TrainingContext:
    patcher: object
    network: nn.Module
    denoiser: "NextDiTDenoiser"

    @contextmanager
    def attached(self, adapters: AdapterSet):
        """The trainer's adapters on the training clone through a PatcherInjection, for the run."""
        self.patcher.eject_model()
        self.patcher.set_injections(TRAINING_INJECTION_KEY, [ErasureInjection([adapters]).patcher_injection()])
        self.patcher.inject_model()
        try:
            yield adapters
        finally:
            self.patcher.eject_model()
            self.patcher.remove_injections(TRAINING_INJECTION_KEY)


@contextmanager
def training(model):
    """Inference mode off, grads on, `in_training` set, the MODEL's clone loaded; everything restored after."""
    patcher = model.clone()
    network = zimage_network(patcher)
    patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, _layout_wrapper)
    previous = model_management.in_training
    with torch.inference_mode(False), torch.enable_grad():
        try:
            _make_trainable(network)
            model_management.load_models_gpu([patcher], memory_required=0, force_full_load=True)
            model_management.in_training = True
            yield TrainingContext(patcher, network, NextDiTDenoiser(patcher, network))
        finally:
            model_management.in_training = previous
            patcher.eject_model()


class NextDiTDenoiser:
    """`denoise(x, sigma, context, lengths, capture=None) -> v` for EraseTrainer, on ComfyUI's own NextDiT.

    NextDiT takes one caption length per forward, so a batch of mixed lengths runs as one forward per length (as
    if each sample ran alone, which is what the core model computes with its masked batch padding). Keyword
    attention for L_attn is captured through `optimized_attention_override` in the joint blocks.
    """

    def __init__(self, patcher, network: nn.Module):
        self.patcher, self.network = patcher, network
        self.device = patcher.load_device
        self.dtype = patcher.model.get_dtype_inference() if hasattr(patcher.model, "get_dtype_inference") else \
            patcher.model.get_dtype()
        self.check_interrupt = True

    def _options(self, capture_sink=None) -> dict:
        options = {"wrappers": {comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL:
                                {WRAPPER_KEY: [_layout_wrapper]}}}
        for wrapper in self.patcher.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL):
            if wrapper is not _layout_wrapper:
                options["wrappers"][comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL].setdefault(None, []).append(
                    wrapper)
        if capture_sink is not None:
            options["optimized_attention_override"] = capture_sink
        return options

    def __call__(self, x, sigma, context, lengths, capture: AttentionCapture | None = None):
        if self.check_interrupt:
            model_management.throw_exception_if_processing_interrupted()
        lengths = [int(n) for n in torch.as_tensor(lengths).tolist()] if lengths is not None else \
            [context.shape[1]] * x.shape[0]
        groups: dict[int, list[int]] = {}
        for row, length in enumerate(lengths):
            groups.setdefault(length, []).append(row)
        outputs, maps, order = [], [], []
        for length, rows in groups.items():
            index = torch.tensor(rows)
            sink = None
            if capture is not None:
                sink = _KeywordProbe(capture.columns[index], None if capture.column_mask is None else
                                     capture.column_mask[index], x.shape[-2:], length, self.network)
            velocity = self.network(
                x[index].to(self.device, self.dtype), sigma[index].to(self.device, torch.float32),
                context=context[index, :length].to(self.device, self.dtype), num_tokens=length,
                transformer_options=self._options(sink))
            outputs.append(velocity.float().to(x.device))
            maps.append(sink.maps if sink is not None else None)
            order.extend(rows)
        inverse = torch.argsort(torch.tensor(order))
        if capture is not None:
            for layer in range(len(maps[0])):
                merged = torch.cat([group[layer].to(x.device) for group in maps])
                capture.maps.append(merged[inverse])
        return torch.cat(outputs)[inverse]


class _KeywordProbe:
    """optimized_attention_override: in each joint block, image-query × keyword-key softmax attention."""

    def __init__(self, columns, column_mask, latent_hw, text_length: int, network):
        self.layout = TokenLayout.from_shapes([text_length] * columns.shape[0], latent_hw, network.patch_size,
                                              network.pad_tokens_multiple or 1)
        self.columns, self.column_mask = columns, column_mask
        self.maps: list[torch.Tensor] = []

    def __call__(self, attention, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        if options.get("block_type") == "double":
            query, key = args[0], args[1]          # (B, H, L, D), normalised and rotated (skip_reshape)
            found = keyword_attention(query, key, None, self.layout.text_span, self.layout.image_tokens,
                                      self.columns.to(query.device))
            if self.column_mask is not None:
                found = found * self.column_mask[:, None, None, :].to(found.device, found.dtype)
            self.maps.append(found)
        return attention(*args, **kwargs)


class ClipConditioner:
    """TextConditioner over a ComfyUI CLIP (Qwen3-4B for Z-Image): features per prompt, keyword rows by tokenizer.

    Keyword positions come from the real token sequence the encoder sees (chat template included): the ids are
    decoded prefix by prefix to get each token's character span, and every token overlapping the keyword's span
    inside the user's prompt is a keyword row ("Van Gogh" -> " Van", " G", "ogh").
    """

    def __init__(self, clip):
        self.clip = clip
        self._features: dict[str, torch.Tensor] = {}

    def _ids(self, prompt: str) -> list[int]:
        tokens = self.clip.tokenize(prompt)
        return [int(pair[0]) for chunks in tokens.values() for chunk in chunks for pair in chunk
                if isinstance(pair[0], (int, numpy.integer))]

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> torch.Tensor:
        if prompt not in self._features:
            cond = self.clip.encode_from_tokens_scheduled(self.clip.tokenize(prompt), show_pbar=False)[0][0]
            with torch.inference_mode(False):           # a normal tensor, whichever mode the node runs in
                self._features[prompt] = cond[0].float().cpu().clone()
        return self._features[prompt]

    def encode(self, prompts: list[str]):
        features = [self._encode_one(prompt) for prompt in prompts]
        width = max(feature.shape[0] for feature in features)
        batch = torch.zeros(len(prompts), width, features[0].shape[-1])
        for row, feature in enumerate(features):
            batch[row, :feature.shape[0]] = feature
        return batch, torch.tensor([feature.shape[0] for feature in features])

    def keyword_positions(self, prompt: str, keyword: str) -> list[int]:
        ids = self._ids(prompt)
        rows = self._encode_one(prompt).shape[0]
        if rows != len(ids):
            raise ValueError(f"the text encoder returned {rows} rows for {len(ids)} tokens of {prompt!r}; keyword rows "
                             f"cannot be located for this CLIP")
        decode = self.clip.tokenizer.decode
        ends = [len(decode(ids[:index + 1], skip_special_tokens=False)) for index in range(len(ids))]
        text = decode(ids, skip_special_tokens=False)
        start = text.rfind(prompt)
        region = (start, start + len(prompt)) if start >= 0 else (0, len(text))
        import re
        positions = set()
        for match in re.finditer(rf"(?i)(?<!\w){re.escape(keyword.strip())}(?!\w)", text[region[0]:region[1]]):
            low, high = region[0] + match.start(), region[0] + match.end()
            for index, end in enumerate(ends):
                begin = ends[index - 1] if index else 0
                if begin < high and end > low:
                    positions.add(index)
        return sorted(positions)

    def check_keyword(self, keyword: str) -> None:
        if not keyword.strip():
            raise ValueError("a keyword is empty; give the word(s) to erase, e.g. 'Van Gogh'")


def conditioner_for(clip, config: DiTConfig):
    """The nano CLIP gets the CLI's NanoConditioner (same features, same keyword rows); others ClipConditioner.

    Refuses a CLIP whose features do not fit the MODEL's caption projection (e.g. Qwen3-4B with the nano model).
    """
    if clip is None or not hasattr(clip, "tokenize"):
        raise ValueError("the clip input is missing or not a CLIP; connect the MODEL's text encoder")
    model = getattr(clip, "cond_stage_model", None)
    if isinstance(model, NanoTextModel):
        from zerase_core.nano.prompts import NanoConditioner
        conditioner = NanoConditioner(model.encoder)
    else:
        conditioner = ClipConditioner(clip)
    width = conditioner.encode([""])[0].shape[-1]
    if width != config.cap_feat_dim:
        raise ValueError(f"the CLIP gives {width}-wide text features but this MODEL reads {config.cap_feat_dim}-wide "
                         f"ones; connect the MODEL's own text encoder (Qwen3-4B for Z-Image, the nano CLIP for nano)")
    return conditioner


def is_nano(model) -> bool:
    return base_info(model).nano


# ---------------------------------------------------------------- progress, events, previews


class StepReporter:
    """`on_step` for the trainer: progress bar (with a preview every N steps), server event, interrupt check."""

    def __init__(self, node_id, total: int, preview: Callable[[int], object] | None = None, preview_every: int = 0):
        self.node_id, self.total = node_id, total
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.preview, self.preview_every = preview, preview_every

    def __call__(self, step: int, total: int, metrics: dict) -> None:
        image = None
        if self.preview is not None and self.preview_every and (step % self.preview_every == 0 or step == total):
            image = ("JPEG", self.preview(step), 512)
        send_event(TRAIN_EVENT, {"node": self.node_id, "step": step, "total": total,
                                 "L_er": metrics.get("loss_erase"), "L_attn": metrics.get("loss_attention"),
                                 "L_pr": metrics.get("loss_preserve"), "lambda": metrics.get("lambda"),
                                 "loss": metrics.get("loss_total")})
        self.bar.update_absolute(step, total, image)
        model_management.throw_exception_if_processing_interrupted()


def send_event(event: str, data: dict) -> None:
    try:
        from server import PromptServer
    except ImportError:
        return
    server = getattr(PromptServer, "instance", None)
    if server is not None:
        server.send_sync(event, data, getattr(server, "client_id", None))


def preview_sampler(denoiser: NextDiTDenoiser, conditioner, vae, prompt: str, latent_hw, steps: int, cfg: float,
                    shift: float, seed: int = 0):
    """A function step -> PIL image of `prompt` sampled with the current adapters (fixed noise)."""
    from PIL import Image

    from zerase_core.sampling import euler_sample, guided_velocity, initial_noise, shifted_sigmas

    def render(step: int):
        with torch.no_grad():
            context, lengths = conditioner.encode([prompt])
            empty, empty_lengths = conditioner.encode([""])
            velocity = guided_velocity(denoiser, context, lengths, cfg, empty, empty_lengths)
            checking, denoiser.check_interrupt = denoiser.check_interrupt, False
            try:
                latent = euler_sample(velocity, initial_noise((1, 16, *latent_hw), seed), shifted_sigmas(steps, shift))
            finally:
                denoiser.check_interrupt = checking
            image = vae.decode(latent)[0].clamp(0, 1)
        return Image.fromarray((image.cpu().numpy() * 255).round().astype(numpy.uint8))

    return render


# ---------------------------------------------------------------- sampling (ErasureCompare)


def encode_prompt(clip, text: str):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text), show_pbar=False)


def sample_images(model, vae, positive, negative, seed: int, steps: int, cfg: float, size: int,
                  sampler: str = "euler", scheduler: str = "simple") -> torch.Tensor:
    """One image (1, H, W, 3) as KSampler + VAEDecode make it (same noise for the same seed)."""
    latent = torch.zeros([1, 16, size // 8, size // 8], device=model_management.intermediate_device())
    latent = comfy.sample.fix_empty_latent_channels(model, latent, 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    samples = comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                  denoise=1.0, disable_pbar=True, seed=seed)
    images = vae.decode(samples)
    return images.reshape(-1, *images.shape[-3:])


def check_interrupt() -> None:
    model_management.throw_exception_if_processing_interrupted()


def progress_bar(total: int, node_id=None):
    return comfy.utils.ProgressBar(total, node_id=node_id)
