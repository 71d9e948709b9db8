"""`ZImageDiT` computes exactly what ComfyUI's `NextDiT` computes for Z-Image, with the same state-dict keys.

Needs a real ComfyUI (`COMFYUI_PATH`, ComfyUI's python; see `comfy_support.py`), otherwise those tests skip:

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfyui-venv/bin/python -m pytest -k parity -s -q

Weights: every parameter normal-initialised (none zero, every block contributes: see
`test_parity_every_block_changes_output`), and the shipped nano weights when they exist. ComfyUI runs once with
`comfy.model_management.in_training = False` (its fused comfy-kitchen rms+rope kernels) and once with True
(plain torch).
"""
from __future__ import annotations

import inspect

import pytest
import torch
from comfy_support import (
    REPO_ROOT,
    build_comfy_zimage,
    build_nextdit,
    comfy_training_flag,
    nextdit_unet_config,
    nextdit_velocity,
    require_comfy,
)
from torch import nn

from zerase_core.model.config import DiTConfig
from zerase_core.model.dit import ZImageDiT

TOLERANCE = 1e-5            # max|ours − ComfyUI| ≤ TOLERANCE · max|ours|, per case
MIN_BLOCK_EFFECT = 0.10     # skipping any one block changes the output by more than this (relative L2)
NANO_WEIGHTS = REPO_ROOT / "zerase_core" / "nano" / "weights" / "dit.safetensors"
TURBO_KEY_COUNT = 453

TINY_CONFIGS = {
    "pad32": DiTConfig(dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, cap_feat_dim=64, axes_dims=(8, 12, 12)),
    "pad8": DiTConfig(
        dim=256, n_layers=1, n_refiner_layers=2, n_heads=4, cap_feat_dim=40, axes_dims=(16, 24, 24),
        pad_tokens_multiple=8, norm_eps=1e-6,
    ),
    # Lumina-2: GQA (8 query heads over 2 kv heads), SiLU adaLN from a 256-wide time embedding, no pad tokens
    "lumina": DiTConfig.lumina2(dim=256, n_layers=2, n_refiner_layers=1, n_heads=8, n_kv_heads=2, cap_feat_dim=40,
                                axes_dims=(8, 12, 12), norm_eps=1e-6),
}

# (caption tokens, latent H×W, batch): every length, resolution and batch size appears at least twice. 7 tokens with
# 4×6 gives equal padded text and image streams at pad 32; 9×7 is odd (circular patch padding, then cropping).
CASES = [
    (1, (8, 8), 1),
    (7, (4, 6), 3),
    (32, (16, 12), 1),
    (40, (9, 7), 3),
    (40, (4, 6), 1),
    (7, (9, 7), 1),
    (1, (16, 12), 3),
    (32, (8, 8), 3),
]

PATHS = {"inference": False, "training": True}   # value of comfy.model_management.in_training


def randomize_parameters(model: nn.Module, seed: int) -> None:
    """Normal init of every parameter, scaled so activations stay O(1): no zero, no identity block.

    Linear weights N(0, 1/fan_in); biases N(0, 0.1²); norm weights N(1, 0.1²); pad tokens N(0, 1).
    (`ZImageDiT`'s own init zeroes adaLN and the output layer, which would make a parity test vacuous.)
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "pad_token" in name:
                values = torch.randn(parameter.shape, generator=generator)
            elif parameter.dim() == 2:
                values = torch.randn(parameter.shape, generator=generator) * parameter.shape[1] ** -0.5
            elif name.endswith("bias"):
                values = torch.randn(parameter.shape, generator=generator) * 0.1
            else:
                values = 1.0 + torch.randn(parameter.shape, generator=generator) * 0.1
            parameter.copy_(values)


def random_model(config: DiTConfig, seed: int = 0) -> ZImageDiT:
    model = ZImageDiT(config, dtype=torch.float32)
    randomize_parameters(model, seed)
    return model.eval()


def nano_model() -> ZImageDiT:
    if not NANO_WEIGHTS.is_file():
        pytest.skip(f"shipped nano weights not trained yet: {NANO_WEIGHTS.relative_to(REPO_ROOT)} does not exist")
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(NANO_WEIGHTS), framework="pt") as handle:
        metadata = handle.metadata()
    config = DiTConfig.from_metadata(metadata)
    assert config is not None, f"{NANO_WEIGHTS.name} has no 'zerase.dit_config' metadata"
    model = ZImageDiT(config, dtype=torch.float32)
    state = {key: value.float() for key, value in load_file(str(NANO_WEIGHTS)).items()}
    model.load_state_dict(state, strict=True)
    return model.eval()


def make_inputs(config: DiTConfig, case, seed: int):
    tokens, (height, width), batch = case
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, config.in_channels, height, width, generator=generator)
    sigma = torch.rand(batch, generator=generator).clamp(0.02, 0.98)
    context = torch.randn(batch, tokens, config.cap_feat_dim, generator=generator)
    return x, sigma, context


def case_label(case) -> str:
    tokens, (height, width), batch = case
    return f"L={tokens:<2} {height}x{width:<2} B={batch}"


@pytest.fixture(scope="module", params=["random-pad32", "random-pad8", "random-lumina", "nano"])
def reference(request):
    """(label, ZImageDiT, [(case, inputs, our velocity)]), computed once per weight source."""
    if request.param == "nano":
        model = nano_model()
    else:
        model = random_model(TINY_CONFIGS[request.param.removeprefix("random-")])
    require_comfy()   # skip before spending time on our forwards
    results = []
    with torch.no_grad():
        for index, case in enumerate(CASES):
            inputs = make_inputs(model.config, case, seed=100 + index)
            results.append((case, inputs, model(*inputs)))
    return request.param, model, results


@pytest.mark.comfyui
@pytest.mark.parametrize("path", list(PATHS))
def test_parity_with_comfyui_nextdit(reference, path):
    label, ours, results = reference
    comfy_model = build_comfy_zimage(ours.config)          # model_base.Lumina2 (FLOW), as UNETLoader would build
    nextdit = comfy_model.diffusion_model
    state = ours.state_dict()
    their_keys = set(nextdit.state_dict())
    assert set(state) == their_keys, (
        f"key mismatch: only ours {sorted(set(state) - their_keys)}, only ComfyUI {sorted(their_keys - set(state))}"
    )
    nextdit.load_state_dict(state, strict=True)
    # ... and back: ComfyUI's tensors load into a fresh ZImageDiT unchanged.
    round_trip = ZImageDiT(ours.config, device="meta")
    round_trip.load_state_dict(nextdit.state_dict(), strict=True, assign=True)
    for key, value in round_trip.state_dict().items():
        assert torch.equal(value, state[key]), key

    worst = 0.0
    print(f"\n[parity {label} / {path} (in_training={PATHS[path]})]")
    with torch.no_grad(), comfy_training_flag(PATHS[path]):
        for case, (x, sigma, context), expected in results:
            actual = nextdit_velocity(nextdit, x, sigma, context)
            assert actual.shape == expected.shape == x.shape
            scale = expected.abs().max().item()
            relative = (actual - expected).abs().max().item() / scale
            worst = max(worst, relative)
            print(f"  {case_label(case)}  max|out|={scale:.3f}  max|diff|/max|out|={relative:.2e}")
            assert relative <= TOLERANCE, f"{case_label(case)}: relative max diff {relative:.3e} > {TOLERANCE}"

        # Through ComfyUI's model wrapper too: apply_model returns denoised = x − sigma·v (CONST, multiplier 1).
        case, (x, sigma, context), expected = results[1]
        denoised = comfy_model.apply_model(x, sigma, c_crossattn=context, num_tokens=context.shape[1])
        ours_denoised = x - sigma[:, None, None, None] * expected
        relative = (denoised - ours_denoised).abs().max().item() / ours_denoised.abs().max().item()
        print(f"  apply_model {case_label(case)}  denoised max|diff|/max|out|={relative:.2e}")
        assert relative <= TOLERANCE
    print(f"  max relative diff {label} / {path}: {worst:.2e}")


def test_parity_random_init_has_no_zero_parameter():
    for name, config in TINY_CONFIGS.items():
        model = random_model(config)
        zeros = [key for key, value in model.state_dict().items() if (value == 0).any()]
        assert not zeros, f"{name}: parameters containing exact zeros: {zeros}"


class _SkipBlock(nn.Module):
    """Stands in for a transformer block: returns its hidden states unchanged."""

    def forward(self, hidden, *args, **kwargs):
        return hidden


def _block_ids():
    for name, config in TINY_CONFIGS.items():
        for family, count in (
            ("context_refiner", config.n_refiner_layers), ("noise_refiner", config.n_refiner_layers),
            ("layers", config.n_layers),
        ):
            for index in range(count):
                yield pytest.param(name, family, index, id=f"{name}-{family}.{index}")


@pytest.mark.parametrize(("config_name", "family", "index"), list(_block_ids()))
def test_parity_every_block_changes_output(config_name, family, index):
    """Non-vacuity of the parity test: with the random init, every block matters (relative L2 > 10 %)."""
    model = random_model(TINY_CONFIGS[config_name])
    inputs = make_inputs(model.config, (7, (8, 8), 2), seed=7)
    blocks = getattr(model, family)
    with torch.no_grad():
        full = model(*inputs)
        original = blocks[index]
        blocks[index] = _SkipBlock()
        try:
            skipped = model(*inputs)
        finally:
            blocks[index] = original
    change = ((skipped - full).norm() / full.norm()).item()
    print(f"\n[parity non-vacuity {config_name}] skipping {family}.{index}: relative L2 change {change:.3f}")
    assert change > MIN_BLOCK_EFFECT, f"skipping {family}.{index} changes the output by only {change:.3%}"


@pytest.mark.comfyui
def test_parity_turbo_key_set():
    """Our Turbo-sized model has exactly NextDiT's 453 keys and shapes (both built on the meta device)."""
    ours = ZImageDiT(DiTConfig(), device="meta").state_dict()
    theirs = build_nextdit(DiTConfig(), device="meta").state_dict()
    assert len(theirs) == TURBO_KEY_COUNT
    assert set(ours) == set(theirs), (
        f"only ours {sorted(set(ours) - set(theirs))}, only ComfyUI {sorted(set(theirs) - set(ours))}"
    )
    mismatched = {key: (ours[key].shape, theirs[key].shape) for key in ours if ours[key].shape != theirs[key].shape}
    assert not mismatched, mismatched


@pytest.mark.comfyui
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_parity_turbo_keys_detected_as_zimage(prefix):
    """ComfyUI's loader detection (`model_config_from_unet`) sees our Turbo key set as Z-Image, with our config."""
    comfy = require_comfy("comfy.model_detection", "comfy.supported_models")
    config = DiTConfig()
    state = {prefix + key: value for key, value in ZImageDiT(config, device="meta").state_dict().items()}
    model_config = comfy.model_detection.model_config_from_unet(state, prefix)
    assert type(model_config) is comfy.supported_models.ZImage
    detected = dict(model_config.unet_config)
    detected.pop("allow_fp16", None)   # read from weight values, which meta tensors do not have
    expected = nextdit_unet_config(config)
    # n_refiner_layers, multiple_of and norm_eps are never detected: NextDiT's defaults must equal ours.
    defaults = inspect.signature(comfy.ldm.lumina.model.NextDiT.__init__).parameters
    for key in ("n_refiner_layers", "multiple_of", "norm_eps"):
        assert expected.pop(key) == defaults[key].default, key
    assert detected == expected
    assert model_config.sampling_settings["shift"] == config.shift


@pytest.mark.comfyui
@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
def test_parity_lumina2_full_size_keys_detected_as_lumina2(prefix):
    """Our Lumina-Image-2.0-sized key set: the same keys and shapes as ComfyUI's NextDiT, detected by ComfyUI's
    loader as Lumina2 with our config, and by ours as lumina2."""
    comfy = require_comfy("comfy.model_detection", "comfy.supported_models")
    config = DiTConfig.lumina2()
    ours = ZImageDiT(config, device="meta").state_dict()
    theirs = build_nextdit(config, device="meta").state_dict()
    assert {key: value.shape for key, value in ours.items()} == {key: value.shape for key, value in theirs.items()}
    state = {prefix + key: value for key, value in ours.items()}
    model_config = comfy.model_detection.model_config_from_unet(state, prefix)
    assert type(model_config) is comfy.supported_models.Lumina2
    detected = dict(model_config.unet_config)
    expected = nextdit_unet_config(config)
    for key in ("n_refiner_layers", "multiple_of", "norm_eps", "z_image_modulation", "time_scale",
                "pad_tokens_multiple"):   # never detected for Lumina-2: NextDiT's defaults must equal ours
        default = inspect.signature(comfy.ldm.lumina.model.NextDiT.__init__).parameters[key].default
        assert expected.pop(key) == default, key
    assert detected == expected
    assert model_config.sampling_settings["shift"] == config.shift
    from zerase_core.model.checkpoint import detect_architecture, infer_config
    assert detect_architecture(state) == "lumina2"
    assert infer_config({key[len(prefix):]: value for key, value in state.items()}) == config

