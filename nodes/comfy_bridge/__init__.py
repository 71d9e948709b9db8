"""The one place that touches ComfyUI internals: model patchers, injections, wrappers, folders, progress, sampling.

Flow of a gated erasure inside ComfyUI (docs/comfyui.md):
    MODEL.clone()  +  PatcherInjection(inject = AdapterSet.attach, eject = AdapterSet.detach)  on `diffusion_model`
                   +  DIFFUSION_MODEL wrapper:  TokenLayout.from_shapes(context len, latent H×W, patch, pad multiple)
                      made active for the forward, so the gated adapters know which rows are text
The input MODEL is never changed: every node works on a clone, and the adapters are attached only while the clone
is the patcher ComfyUI has loaded. Training runs on the MODEL's own NextDiT (no second copy of the weights) with
inference mode off, gradients on and `comfy.model_management.in_training` set (reset in `finally`).

Nothing in `zerase_core` imports ComfyUI; the node files import only `comfy_api.latest` and this package, whose
names are all re-exported here (`comfy_bridge.with_erasures(...)`).
"""

from .conditioners import ClipConditioner, conditioner_for, prepare, prompt_template, training_prompts
from .erasures import (
    ERASURES_ATTACHMENT,
    INJECTION_KEY,
    WRAPPER_KEY,
    ErasureData,
    ErasureEntry,
    ErasureInjection,
    erasures_of,
    with_erasures,
    with_strength_scale,
)
from .folders import diffusion_model_files, erasure_files, existing_erasure, register_folders, save_path
from .graph_training import TRAINING_INJECTION_KEY, NextDiTDenoiser, TrainingContext, read_resume, training
from .loaders import build_zimage_patcher, load_diffusion_file, load_nano
from .models import BASE_ATTACHMENT, BaseInfo, base_info, describe_layout, is_nano, zimage_network
from .nano_objects import NanoFirstStage, NanoLatentFormat, NanoTextModel, NanoTokenizer, NanoVAE
from .progress import StepReporter, preview_sampler, progress_bar, send_event
from .sampling import encode_prompt, sample_images
from .vram import (
    GPU_SHUFFLE_BANK,
    MemoryPlan,
    encode_before_training,
    layer_checkpointing,
    load_for_training,
    on_gpu,
    plan,
    release_text_encoder,
    resolve_shuffle_bank,
)

__all__ = [
    "BASE_ATTACHMENT",
    "ERASURES_ATTACHMENT",
    "INJECTION_KEY",
    "TRAINING_INJECTION_KEY",
    "WRAPPER_KEY",
    "BaseInfo",
    "ClipConditioner",
    "ErasureData",
    "ErasureEntry",
    "ErasureInjection",
    "NanoFirstStage",
    "NanoLatentFormat",
    "NanoTextModel",
    "NanoTokenizer",
    "NanoVAE",
    "NextDiTDenoiser",
    "StepReporter",
    "TrainingContext",
    "base_info",
    "build_zimage_patcher",
    "conditioner_for",
    "describe_layout",
    "diffusion_model_files",
    "encode_prompt",
    "erasure_files",
    "erasures_of",
    "existing_erasure",
    "is_nano",
    "load_diffusion_file",
    "load_nano",
    "preview_sampler",
    "progress_bar",
    "prompt_template",
    "read_resume",
    "register_folders",
    "sample_images",
    "save_path",
    "send_event",
    "training",
    "with_erasures",
    "with_strength_scale",
    "zimage_network",
    "GPU_SHUFFLE_BANK",
    "MemoryPlan",
    "encode_before_training",
    "layer_checkpointing",
    "load_for_training",
    "on_gpu",
    "plan",
    "prepare",
    "release_text_encoder",
    "resolve_shuffle_bank",
    "training_prompts",
]
