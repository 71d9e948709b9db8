"""The four nodes inside a real ComfyUI (CPU), on a nano-shaped model with random weights.

Stock nodes accept the nano MODEL/CLIP/VAE and reproduce the core sampler; ZEraseTrain trains what the core's CLI
path trains; the erased MODEL from ZEraseTrain and from ApplyErasedWeights give identical images; the input MODEL is
untouched; image rows of every adapted projection are unchanged; stock LoRA loaders ignore erasure files; other
architectures are refused with a message naming them.
"""
from __future__ import annotations

import pytest
import torch

from zerase_core.engine.erase_config import EraseConfig
from zerase_core.formats.erasure_file import read_erasure

PROMPT = "a red star on a white background"
TRAIN_DEFAULTS = dict(concepts="star", keywords="", anchors="", method="zerase", steps=4, learning_rate=1e-3, rank=8,
                      targets="qk", epsilon=0.0, beta=0.1, eta=2.0, seed=0, resolution=64, resume_from="none",
                      preview_every=0)
OUR_NODES = ("LoadSingleStreamDiT", "ZEraseTrain", "ApplyErasedWeights", "ErasureCompare")


@pytest.fixture(scope="module")
def nano(pack, nano_weights):
    with torch.inference_mode():
        model, clip, vae, layout = pack["nodes"]["LoadSingleStreamDiT"].execute("nano (bundled)").result
    return model, clip, vae


@pytest.fixture(scope="module")
def strong(pack, nano):
    """A quickly trained, clearly visible erasure saved as strong.safetensors: (erased MODEL, ERASURE, LOSS_MAP)."""
    model, clip, _ = nano
    return train(pack, model, clip, save_name="strong", learning_rate=5e-2, steps=3).result


def generate(model, clip, vae, text=PROMPT, seed=0, steps=20, cfg=3.0):
    import comfy_extras.nodes_sd3 as sd3

    import nodes
    with torch.inference_mode():
        positive = nodes.CLIPTextEncode().encode(clip, text)[0]
        negative = nodes.CLIPTextEncode().encode(clip, "")[0]
        latent = sd3.EmptySD3LatentImage.execute(64, 64, 1).result[0]
        samples = nodes.KSampler().sample(model, seed, steps, cfg, "euler", "simple", positive, negative, latent)[0]
        return nodes.VAEDecode().decode(vae, samples)[0]


def train(pack, model, clip, **overrides):
    with torch.inference_mode():
        return pack["nodes"]["ZEraseTrain"].execute(model=model, clip=clip, **{**TRAIN_DEFAULTS, **overrides})


def test_pack_registers_four_v3_nodes_with_tooltips(pack):
    from comfy_api.latest import io
    for node_id in OUR_NODES:
        node = pack["nodes"][node_id]
        assert issubclass(node, io.ComfyNode)
        schema = node.GET_SCHEMA()
        missing = [item.id for item in schema.inputs if not item.tooltip]
        assert not missing, f"{node_id} inputs without a tooltip: {missing}"
    assert (pack["path"] / "js").is_dir()


def test_train_widgets_are_the_erase_configs_settings(pack):
    """Every EraseConfig setting with a widget: the node's default, range and tooltip are the setting's."""
    from zerase_core.engine.settings import described
    inputs = pack["nodes"]["ZEraseTrain"].INPUT_TYPES()
    widgets = {**inputs["required"], **inputs.get("optional", {})}
    checked = []
    for name, (field, spec) in described(EraseConfig).items():
        if spec.node is None:
            continue
        kind, options = widgets[spec.node]
        default = 0.0 if name == "epsilon" else field.default          # the widget's 0 is the preset (None)
        assert kind == {int: "INT", float: "FLOAT"}[spec.kind], name
        minimum = spec.minimum if spec.node_minimum is None else spec.node_minimum   # shuffle_bank: -1 = per step
        assert (options["default"], options["min"], options["max"]) == (default, minimum, spec.maximum), name
        assert options["tooltip"] == (spec.node_help or spec.help), name
        checked.append(spec.node)
    assert {"steps", "learning_rate", "rank", "epsilon", "beta", "eta", "sample_steps", "sample_cfg", "batch_size",
            "pool_prompts", "shuffle_bank"} <= set(checked)


def test_stock_nodes_reproduce_the_core_sampler(nano):
    from zerase_core.nano.world import NanoWorld
    image = generate(*nano)
    reference = NanoWorld.load().generate([PROMPT], [0]).movedim(1, -1)
    assert image.shape == reference.shape == (1, 64, 64, 3)
    assert (image - reference).abs().mean().item() < 1 / 255


@pytest.mark.parametrize("bank", [0, 4])
def test_train_agrees_with_the_core_cli_path(pack, nano, tmp_path, bank):
    """With a shuffle bank too: the CLIP encodes the bank before training, the trainer never calls it after."""
    from zerase_core.nano.erasure_runs import erase
    from zerase_core.nano.world import NanoWorld
    model, clip, _ = nano
    # targets "auto" (the widget's default) takes the concept kind's rows as `erase` does (star: Q+K+V)
    train(pack, model, clip, save_name=f"agree-{bank}", shuffle_bank=bank, targets="auto")
    erase(NanoWorld.load(), ["star"], EraseConfig(steps=4, seed=0, beta=0.1, shuffle_bank=bank), tmp_path / "cli.safetensors",
          choose_strength=False)
    node_info, node_tensors, _ = read_erasure(pack["erasures"] / f"agree-{bank}.safetensors")
    assert node_info.training["config"]["shuffle_bank"] == bank
    cli_info, cli_tensors, _ = read_erasure(tmp_path / "cli.safetensors")
    assert node_info.base_fingerprint == cli_info.base_fingerprint and node_info.base_config == cli_info.base_config
    differ = {key: (value, cli_info.training["config"].get(key)) for key, value in node_info.training["config"].items()
              if value != cli_info.training["config"].get(key)}
    assert not differ, f"ZEraseTrain's config differs from the CLI's: {differ}"
    assert node_info.training.get("anchors") == cli_info.training.get("anchors")
    for key, value in cli_tensors.items():
        assert (node_tensors[key] - value).norm() <= 1e-3 * value.norm() + 1e-6, key
    for (_, ours), (_, theirs) in zip(node_info.training["state"]["history"], cli_info.training["state"]["history"]):
        assert set(ours) == set(theirs) and {"loss_erase", "loss_preserve", "lambda"} <= set(ours)
        for name in sorted(set(ours) & {"loss_erase", "loss_attention", "loss_preserve", "lambda"}):
            assert ours[name] == pytest.approx(theirs[name], rel=1e-3, abs=1e-6), name


def test_erased_model_from_train_and_apply_are_identical_and_input_is_untouched(pack, nano):
    import nodes
    model, clip, vae = nano
    before = generate(model, clip, vae)
    erased, erasure, loss = train(pack, model, clip, save_name="strong-again", learning_rate=5e-2, steps=3).result
    assert set(loss) >= {"loss", "L_er", "L_pr", "lambda"} and len(loss["loss"]) == 3
    assert torch.equal(generate(model, clip, vae), before), "ZEraseTrain changed its input MODEL"
    from_train = generate(erased, clip, vae)
    assert (from_train - before).abs().mean() > 1e-4, "the erasure changed nothing"
    apply = pack["nodes"]["ApplyErasedWeights"]
    with torch.inference_mode():
        from_file = apply.execute(model=model, strength=1.0, allow_other_base=False,
                                  erasure_file_1="strong-again.safetensors").result[0]
        from_edge = apply.execute(model=model, strength=1.0, allow_other_base=False, erasure=erasure).result[0]
        stacked = apply.execute(model=model, strength=1.0, allow_other_base=False, erasure=erasure,
                                erasure_file_1="strong-again.safetensors").result[0]
    assert torch.equal(generate(from_file, clip, vae), from_train)
    assert torch.equal(generate(from_edge, clip, vae), from_train)
    # two copies at 1/N each: the same delta, summed in another order
    assert (generate(stacked, clip, vae) - from_train).abs().max() < 1e-4
    with torch.inference_mode():
        stock = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "strong-again.safetensors", 1.0)[0]
    assert not stock.patches and torch.equal(generate(stock, clip, vae), before)


def test_image_rows_of_every_adapted_projection_are_unchanged(pack, nano, strong):
    """Each adapted qkv gives exactly the frozen W·x at image rows (its delta reaches text rows only)."""
    from zerase_core.model.layout import TokenLayout
    model, clip, vae = nano
    with torch.inference_mode():
        erased = pack["nodes"]["ApplyErasedWeights"].execute(
            model=model, strength=1.0, allow_other_base=False, erasure_file_1="strong.safetensors").result[0]
    image = TokenLayout.from_shapes([7], (8, 8), 2, 8).image_mask("layers")[0]    # PROMPT has 7 words
    seen = qkv_rows(erased, clip, vae)
    assert sorted(seen) == [0, 1, 2, 3]
    for index, (frozen, output) in seen.items():
        assert torch.equal(frozen[:, image], output[:, image]), f"layers.{index}: an image row changed"
        assert not torch.equal(frozen[:, ~image], output[:, ~image]), f"layers.{index}: no text row changed"


def qkv_rows(model, clip, vae) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """(frozen W·x, actual output) of every joint layer's attention.qkv in a one-step, no-CFG sample."""
    import torch.nn.functional as F
    network = model.model.diffusion_model
    seen, handles = {}, []
    for index, layer in enumerate(network.layers):
        def hook(module, args, output, index=index):
            seen[index] = (F.linear(args[0], module.weight.to(args[0].dtype)), output.detach().clone())
        handles.append(layer.attention.qkv.register_forward_hook(hook))
    try:
        generate(model, clip, vae, steps=1, cfg=1.0)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_other_architectures_are_refused_with_their_name(pack, comfy, strong, tmp_path):
    import comfy.model_patcher
    import comfy.supported_models
    import folder_paths
    from safetensors.torch import save_file
    loader = pack["nodes"]["LoadSingleStreamDiT"]
    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(12, 4), "img_in.weight": torch.zeros(4, 4)},
              str(folder / "flux-like.safetensors"))
    save_file({"input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(folder / "unet-like.safetensors"))
    saved = folder_paths.folder_names_and_paths["diffusion_models"]
    folder_paths.folder_names_and_paths["diffusion_models"] = ([str(folder)], saved[1])
    try:
        with pytest.raises(ValueError, match="Flux"):
            loader.execute("flux-like.safetensors")
        with pytest.raises(ValueError, match="U-Net"):
            loader.execute("unet-like.safetensors")
    finally:
        folder_paths.folder_names_and_paths["diffusion_models"] = saved
    lumina = comfy.supported_models.Lumina2(dict(
        image_model="lumina2", patch_size=2, in_channels=16, dim=256, cap_feat_dim=32, n_layers=1, n_refiner_layers=1,
        qk_norm=True, n_heads=2, n_kv_heads=2, axes_dims=[32, 48, 48], axes_lens=[64, 32, 32], rope_theta=10000.0))
    lumina.set_inference_dtype(torch.float32, None)
    patcher = comfy.model_patcher.ModelPatcher(lumina.get_model({}, "", device="meta"), torch.device("cpu"),
                                               torch.device("cpu"))
    with pytest.raises(ValueError, match="made for Z-Image.*this MODEL is Lumina-Image-2.0"):   # a nano erasure
        pack["nodes"]["ApplyErasedWeights"].execute(model=patcher, strength=1.0, allow_other_base=False,
                                                    erasure_file_1="strong.safetensors")


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "sub/dir", ".hidden"])
def test_save_name_cannot_leave_the_pack_folder(pack, nano, name):
    model, clip, _ = nano
    with pytest.raises(ValueError, match="save_name"):
        train(pack, model, clip, save_name=name)


def test_erasure_for_another_base_is_refused_unless_allowed(pack, nano, strong):
    from dataclasses import replace

    from zerase_core.formats.erasure_file import save_erasure
    model, _, _ = nano
    info, tensors, _ = read_erasure(pack["erasures"] / "strong.safetensors")
    save_erasure(pack["erasures"] / "other-base.safetensors", tensors, replace(info, base_fingerprint="0123456789abcdef"))
    apply = pack["nodes"]["ApplyErasedWeights"]
    with torch.inference_mode():
        with pytest.raises(ValueError, match="allow_other_base"):
            apply.execute(model=model, strength=1.0, allow_other_base=False, erasure_file_1="other-base.safetensors")
        assert apply.execute(model=model, strength=1.0, allow_other_base=True,
                             erasure_file_1="other-base.safetensors").result[0] is not None
