"""ZEraseTrain on ComfyUI's model management: prompts encoded and the text encoder unloaded before the DiT loads,
nothing encoded during the loop, per-block checkpointing of ComfyUI's NextDiT, fp8 files trained with bf16 compute.

The order is observed, not mocked: forward hooks on the text encoder and on the NextDiT record, at each call, which
models `comfy.model_management.current_loaded_models` holds. Tiny models: ComfyUI's Qwen3 text-encoder classes at
hidden size 64 (test_comfyui_real_format.tiny_qwen3_clip) and a width-256 Z-Image file with ZErase's metadata,
loaded by LoadSingleStreamDiT (fp8 ones through ComfyUI's own quant conversion, dtype policy and ops).
"""
from __future__ import annotations

import importlib

import pytest
import torch
from test_comfyui_real_format import CAPTION_WIDTH, tiny_qwen3_clip

from zerase_core.model.checkpoint import save_dit
from zerase_core.model.config import DiTConfig
from zerase_core.model.dit import ZImageDiT

TINY = DiTConfig(dim=256, n_layers=2, n_refiner_layers=1, n_heads=2, cap_feat_dim=CAPTION_WIDTH, ffn_multiple_of=32)
TRAIN = dict(concepts="a painting by Van Gogh", keywords="Van Gogh", anchors="a painting", method="zerase",
             steps=3, learning_rate=1e-2, rank=2, targets="auto", epsilon=0.0, beta=0.1, eta=1.0, seed=0,
             resolution=32, save_name="vram", resume_from="none", preview_every=0, sample_steps=2, sample_cfg=1.0,
             batch_size=2, pool_prompts=2)


def _tiny_dit(seed: int = 0) -> ZImageDiT:
    torch.manual_seed(seed)
    model = ZImageDiT(TINY)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1 and "bias" not in name:
                parameter.copy_(1.0 + 0.1 * torch.randn_like(parameter))
            else:
                parameter.copy_(torch.randn_like(parameter) * (parameter.shape[-1] ** -0.5 if parameter.dim() == 2
                                                                else 0.1))
    return model


def _write_fp8(model: ZImageDiT, path, scaled: bool) -> None:
    """The joint and refiner layers' linear weights in float8_e4m3fn (scaled: per-tensor `scale_weight` and the
    `scaled_fp8` marker, the layout ComfyUI's convert_old_quants reads); everything else in bf16."""
    from safetensors.torch import save_file
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach()
        if value.dim() == 2 and key.endswith(".weight") and ("layers." in key or "refiner." in key):
            scale = value.abs().max().float() / 448.0 if scaled else torch.tensor(1.0)
            tensors[key] = (value / scale).to(torch.float8_e4m3fn)
            if scaled:
                tensors[key[:-len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            tensors[key] = value.to(torch.bfloat16)
    if scaled:
        tensors["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    temporary = path.with_suffix(".tmp")
    save_file(tensors, str(temporary), metadata=model.config.to_metadata())
    temporary.replace(path)


@pytest.fixture(scope="module")
def files(comfy, tmp_path_factory):
    """tiny-bf16 / tiny-fp8 / tiny-scaled-fp8 .safetensors in a diffusion_models folder ComfyUI lists."""
    import folder_paths
    folder = tmp_path_factory.mktemp("diffusion_models")
    model = _tiny_dit()
    save_dit(model, folder / "tiny-bf16.safetensors", dtype=torch.bfloat16)
    _write_fp8(model, folder / "tiny-fp8.safetensors", scaled=False)
    _write_fp8(model, folder / "tiny-scaled-fp8.safetensors", scaled=True)
    saved = folder_paths.folder_names_and_paths["diffusion_models"]
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(folder)], saved[1])
    yield folder
    folder_paths.folder_names_and_paths["diffusion_models"] = saved


def _load(pack, name):
    with torch.inference_mode():
        return pack["nodes"]["LoadSingleStreamDiT"].execute(name).result[0]


def _train(pack, model, clip, **overrides):
    with torch.inference_mode():
        return pack["nodes"]["ZEraseTrain"].execute(model=model, clip=clip, **{**TRAIN, **overrides})


def _node_module(pack, name):
    return importlib.import_module(str(pack["path"]).replace(".", "_x_") + f".nodes.{name}")


def test_prompts_are_encoded_and_the_text_encoder_unloaded_before_the_dit_loads(pack, files):
    import comfy.model_management as mm
    clip, model = tiny_qwen3_clip(), _load(pack, "tiny-bf16.safetensors")
    network = model.model.diffusion_model
    events = []

    def resident():
        names = set()
        for loaded in mm.current_loaded_models:
            if loaded.model is not None and loaded.model.is_clone(clip.patcher):
                names.add("text encoder")
            if loaded.model is not None and loaded.model.is_clone(model):
                names.add("dit")
        return names

    import comfy.text_encoders.llama
    qwen3 = [module for module in clip.cond_stage_model.modules()
             if isinstance(module, comfy.text_encoders.llama.Qwen3_4B)]
    assert len(qwen3) == 1
    encoder_hook = qwen3[0].register_forward_hook(lambda *_: events.append(("encode", resident())))
    dit_hook = network.register_forward_pre_hook(lambda *_: events.append(("dit", resident())))
    try:
        output = _train(pack, model, clip, shuffle_bank=3, save_name="vram-order")
    finally:
        encoder_hook.remove()
        dit_hook.remove()
    kinds = [kind for kind, _ in events]
    assert "encode" in kinds and "dit" in kinds
    first_dit = kinds.index("dit")
    assert "encode" not in kinds[first_dit:], "a prompt was encoded after the DiT started (during the loop)"
    assert all("dit" not in names for kind, names in events if kind == "encode"), "DiT resident while encoding"
    leaks = [names for kind, names in events if kind == "dit" and "text encoder" in names]
    assert not leaks, f"the text encoder was resident during {len(leaks)} DiT forwards"
    assert all("dit" in names for kind, names in events if kind == "dit")
    # each prompt of the run once: erase, anchor, empty and the 3 word orders (ClipConditioner caches by prompt)
    training = _node_module(pack, "training")
    inputs = training.TrainInputs(**{key: value for key, value in TRAIN.items()
                                     if key not in ("save_name", "resume_from", "preview_every")}, shuffle_bank=3)
    expected = pack["bridge"].training_prompts(training.prompt_set(inputs, False), training.erase_config(inputs, False))
    assert kinds.count("encode") == len(expected)
    report = " ".join(output.ui["text"])
    assert "text encoder released" in report and "DiT on the CPU" in report, report


def test_shuffle_bank_auto_is_a_bank_on_a_gpu_and_per_step_on_a_cpu(pack):
    resolve = pack["bridge"].resolve_shuffle_bank
    assert resolve(0, gpu=True) == pack["bridge"].GPU_SHUFFLE_BANK == 8
    assert resolve(0, gpu=False) == 0 and resolve(-1, gpu=True) == 0 and resolve(5, gpu=False) == 5
    with pytest.raises(ValueError, match=r"shuffle_bank -2 .* -1 = a fresh order every step"):
        resolve(-2, gpu=True)


def _step(pack, model, checkpointing: bool, partial: bool = False, capture: bool = False):
    """One denoiser forward + backward inside ZEraseTrain's context: (velocity, adapter grads, saved bytes).
    `partial`: half the DiT then unloaded by ComfyUI (its lowvram state: those modules cast their weights per op)."""
    from zerase_core.adapters.gated import AdapterConfig, AdapterSet
    bridge = pack["bridge"]
    memory = bridge.MemoryPlan(0, checkpointing, None, 0.0)
    saved = {}

    def pack_hook(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with bridge.training(model, memory) as context:
        if partial:
            context.patcher.partially_unload(context.patcher.offload_device, context.patcher.model_size() // 2)
            offloaded = [module for module in context.network.modules() if hasattr(module, "prev_comfy_cast_weights")]
            assert offloaded, "ComfyUI offloaded no module"
        torch.manual_seed(1)
        adapters = AdapterSet(context.network, AdapterConfig(rank=2))
        with torch.no_grad():
            for parameter in adapters.parameters():
                parameter.normal_(0, 0.1)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2, 16, 4, 4, generator=generator)
        context_features = torch.randn(2, 7, CAPTION_WIDTH, generator=generator)
        with context.attached(adapters):
            maps = None
            arguments = (x, torch.tensor([0.7, 0.3]), context_features, torch.tensor([7, 7]))
            with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda tensor: tensor):
                if capture:  # the erase row's image→keyword attention, as a training step captures it
                    from zerase_core.model.keyword_attention import AttentionCapture

                    maps = AttentionCapture(columns=torch.tensor([[2, 3], [1, 4]]))
                    velocity = context.denoiser(*arguments, maps)
                else:
                    velocity = context.denoiser(*arguments)
            loss = velocity.square().mean()
            if maps is not None:
                loss = loss + sum(layer.square().mean() for layer in maps.maps)
            loss.backward()
        grads = [parameter.grad.clone() for parameter in adapters.parameters()]
        assert getattr(context.network, "gradient_checkpointing", False) == checkpointing
    assert not hasattr(context.network, "gradient_checkpointing") and "forward" not in \
        context.network.layers[0].__dict__, "checkpointing was not undone"
    return velocity.detach(), grads, sum(saved.values())


@pytest.mark.parametrize("capture", [False, True], ids=["plain", "keyword-capture"])
def test_checkpointed_blocks_give_the_same_gradients_and_keep_less(pack, files, capture):
    """Per-block checkpointing of ComfyUI's NextDiT: the same velocity and adapter gradients, less kept; also with
    the keyword-attention capture of the erase row (L_attn), whose maps the recomputation must rebuild alike."""
    model = _load(pack, "tiny-bf16.safetensors")
    plain_v, plain_grads, plain_saved = _step(pack, model, False, capture=capture)
    ckpt_v, ckpt_grads, ckpt_saved = _step(pack, model, True, capture=capture)
    assert torch.equal(plain_v, ckpt_v)
    for plain, ckpt in zip(plain_grads, ckpt_grads, strict=True):
        torch.testing.assert_close(ckpt, plain, rtol=1e-5, atol=1e-6)
    assert ckpt_saved < 0.7 * plain_saved, (ckpt_saved, plain_saved)


@pytest.mark.parametrize("name", ["tiny-fp8.safetensors", "tiny-scaled-fp8.safetensors"])
def test_fp8_files_train_with_bf16_compute_and_keep_fp8_weights(pack, files, name, monkeypatch):
    """fp8_e4m3fn (kept as stored with ComfyUI's --fp8_e4m3fn-unet; a CPU would otherwise upcast a model this
    small) and scaled fp8 (QuantizedTensor weights through ComfyUI's mixed-precision ops), computed in bf16 as set
    by the stock ModelComputeDtype node (ComfyUI's default on a bf16 GPU)."""
    import comfy.cli_args
    from comfy_extras.nodes_model_advanced import ModelComputeDtype
    monkeypatch.setattr(comfy.cli_args.args, "fp8_e4m3fn_unet", name == "tiny-fp8.safetensors")
    model = _load(pack, name)
    network = model.model.diffusion_model
    weight = network.layers[0].attention.qkv.weight
    assert weight.dtype == torch.float8_e4m3fn or "Quantized" in type(weight).__name__, type(weight)
    before = weight.clone() if weight.dtype == torch.float8_e4m3fn else None
    with torch.inference_mode():
        model = ModelComputeDtype().patch(model, "bf16")[0]
    clip = tiny_qwen3_clip()
    dtypes = set()
    hook = network.layers[0].register_forward_pre_hook(lambda module, args: dtypes.add(args[0].dtype))
    try:
        _, erasure, losses = _train(pack, model, clip, shuffle_bank=2, save_name=f"vram-{name[:-12]}").result
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}, dtypes
    assert all(torch.isfinite(torch.tensor(values)).all() for values in losses.values())
    assert losses["loss"][0] != losses["loss"][-1]
    trained = [tensor for key, tensor in erasure.tensors.items() if key.endswith(".up")]
    assert trained and any(tensor.abs().sum() > 0 for tensor in trained), list(erasure.tensors)[:4]
    assert all(tensor.dtype in (torch.float32, torch.bfloat16) for tensor in erasure.tensors.values())
    weight = network.layers[0].attention.qkv.weight
    assert weight.dtype == torch.float8_e4m3fn or "Quantized" in type(weight).__name__
    if before is not None:
        assert torch.equal(weight.view(torch.uint8), before.view(torch.uint8)), "fp8 base weights changed"


def test_memory_plan_on_a_gpu_checkpoints_caps_the_build_and_reserves_what_the_model_predicts(pack, files):
    """The plan is arithmetic on the MODEL's dtype and device (no GPU needed): a bf16 MODEL whose load device is a
    GPU, planned for Z-Image-Turbo at 512² / 1024², batch 1, rank 8."""
    from zerase_core.engine import memory_model
    bridge = pack["bridge"]
    model = bridge.build_zimage_patcher(TINY, _tiny_dit().state_dict(), nano=False, dtype=torch.bfloat16)
    assert bridge.plan(model, TINY, 64, 1, 8).checkpointing is False       # on the CPU: results as the CLI's
    model.load_device = torch.device("cuda", 0)
    turbo = DiTConfig.turbo()
    small, large = bridge.plan(model, turbo, 512, 1, 8), bridge.plan(model, turbo, 1024, 1, 8)
    assert small.checkpointing and large.checkpointing
    # the build batch fits in what the step needs beside the weights (one forward's activations: engine/gradients)
    assert small.build_batch == 3 and 1 <= large.build_batch <= small.build_batch
    problem = memory_model.comfy_problem(turbo, 512, 2, True, 1, 8, build_batch=3)
    assert small.reserve_bytes == memory_model.training_reserve_bytes(problem)
    assert 0.5 < small.reserve_bytes / 2**30 < 2.0 < large.reserve_bytes / 2**30
    assert small.predicted_peak_gb == pytest.approx(12.30, abs=0.05)


def test_a_partially_loaded_dit_trains_as_a_fully_loaded_one(pack, files):
    """ComfyUI's lowvram state (what a card too small for weights + training gets): offloaded modules keep
    ComfyUI's per-op cast, with checkpointing, and give the fully loaded model's velocity and gradients."""
    model = _load(pack, "tiny-bf16.safetensors")
    full_v, full_grads, _ = _step(pack, model, True)
    partial_v, partial_grads, _ = _step(pack, model, True, partial=True)
    torch.testing.assert_close(partial_v, full_v)
    for full, partial in zip(full_grads, partial_grads, strict=True):
        torch.testing.assert_close(partial, full, rtol=1e-5, atol=1e-6)


def test_memory_plan_checkpoints_only_the_blocks_the_memory_needs(pack, files, monkeypatch):
    """On a GPU the plan checkpoints the fewest joint blocks whose predicted peak fits the device (issue 16): none
    on a 24 GiB card at 512², some at 1024²; layer_checkpointing wraps only those blocks."""
    import sys
    bridge = pack["bridge"]
    vram = sys.modules[bridge.__name__ + ".vram"]
    model = bridge.build_zimage_patcher(TINY, _tiny_dit().state_dict(), nano=False, dtype=torch.bfloat16)
    model.load_device = torch.device("cuda", 0)
    turbo = DiTConfig.turbo()
    plans = {}
    monkeypatch.setattr(vram, "training_budget", lambda device: 24 * 2**30)
    for size in (512, 1024):
        plans[size] = bridge.plan(model, turbo, size, 1, 8)
    assert plans[512].blocks == 0 and not plans[512].checkpointing
    assert 0 < plans[1024].blocks < turbo.n_layers and plans[1024].checkpointing
    assert plans[1024].predicted_peak_gb <= 24
    network = model.model.diffusion_model
    with vram.layer_checkpointing(network, True, 1) as wrapped:
        assert wrapped == 1 and "forward" in network.layers[0].__dict__ and "forward" not in network.layers[1].__dict__
    assert "forward" not in network.layers[0].__dict__
