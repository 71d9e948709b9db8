"""bf16, fp16 and fp8 (float8_e4m3fn) diffusion-model files of both families (Z-Image and Lumina-Image-2.0) load
memory-mapped, and their forward equals the float32 model's weights cast the same way (file dtype, then the compute
dtype: bf16 for fp8), and the float32 forward within the dtype's tolerance. Files are ComfyUI-style (prefixed keys,
no zerase metadata: the config is read from the shapes)."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from zerase_core.model.config import DiTConfig
from zerase_core.real.mapped import read_header
from zerase_core.real.sources import component_kind, load_transformer
from zerase_fixtures import dit_output, randomized_dit

PREFIX = "model.diffusion_model."
FAMILIES = {   # head dims inferable from shapes alone (Z-Image 128, Lumina-2 96 with 2 query heads per kv head)
    "z-image": DiTConfig(dim=256, n_layers=1, n_refiner_layers=1, n_heads=2, axes_dims=(32, 48, 48), cap_feat_dim=32),
    "lumina2": DiTConfig.lumina2(dim=384, n_layers=1, n_refiner_layers=1, n_heads=4, n_kv_heads=2, cap_feat_dim=48,
                                 in_channels=16),
}
# 8 unit roundoffs of the file dtype (2^-8, 2^-11, 2^-4). Measured relative error of the forward against float32
# (seed 4): z-image bf16 1.11e-2, fp16 1.41e-3, fp8 1.36e-1; lumina2 bf16 1.19e-2, fp16 1.93e-3, fp8 1.31e-1
TOLERANCE = {torch.bfloat16: 8 * 2 ** -8, torch.float16: 8 * 2 ** -11, torch.float8_e4m3fn: 8 * 2 ** -4}


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float8_e4m3fn], ids=str)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_file_in_each_dtype_loads_mapped_and_computes_the_cast_weights(tmp_path, family, dtype):
    config = FAMILIES[family]
    model = randomized_dit(config, seed=4)
    path = tmp_path / f"{family}.safetensors"
    save_file({PREFIX + key: value.to(dtype).contiguous() for key, value in model.state_dict().items()}, str(path))
    assert component_kind(path) == family
    loaded = load_transformer(path)
    compute = torch.bfloat16 if dtype == torch.float8_e4m3fn else dtype
    assert loaded.dtype == compute and loaded.config.kind == config.kind and loaded.config.dim == config.dim

    reference = copy.deepcopy(model)
    with torch.no_grad():
        for tensor in [*reference.parameters(), *reference.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(dtype).to(compute)
    ours, cast, exact = dit_output(loaded), dit_output(reference), dit_output(model)
    assert torch.equal(ours, cast), f"{family} {dtype}: {relative(ours, cast):.2e} from the cast weights"
    error = relative(ours, exact)
    assert 0 < error <= TOLERANCE[dtype], f"{family} {dtype}: {error:.2e} from float32"

    if dtype != torch.float8_e4m3fn:       # the file's dtype: every weight is a view of one memory map, no copy
        header, _, _ = read_header(path)
        weights = loaded.state_dict()
        first = "x_embedder.weight"
        for key in ("layers.0.attention.qkv.weight", "final_layer.linear.weight", "cap_embedder.1.weight"):
            distance = header[PREFIX + key]["data_offsets"][0] - header[PREFIX + first]["data_offsets"][0]
            assert weights[key].data_ptr() - weights[first].data_ptr() == distance, key
