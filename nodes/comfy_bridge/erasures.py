"""Erasures on a MODEL: the ERASURE edge type, and clones that carry gated adapters through a PatcherInjection.

The adapters see the token layout of each forward through a DIFFUSION_MODEL wrapper (text rows vs image rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import comfy.patcher_extension

from zerase_core.adapters.gated import AdapterSet
from zerase_core.common.limits import check_strength
from zerase_core.formats.erasure_file import ErasureFileError, ErasureInfo, read_erasure
from zerase_core.model.checkpoint import fingerprint
from zerase_core.model.config import KINDS
from zerase_core.model.layout import TokenLayout, active_layout

from .models import zimage_network

ERASURES_ATTACHMENT = "zerase.erasures"  # the ErasureEntry tuple a MODEL carries
INJECTION_KEY = "zerase"
WRAPPER_KEY = "zerase.layout"


@dataclass(frozen=True)
class ErasureData:
    """The ERASURE edge type: a finished erasure's metadata and tensors (and the file it was saved to)."""

    info: ErasureInfo
    tensors: dict[str, torch.Tensor] = field(repr=False)
    path: Path | None = None

    @classmethod
    def from_file(cls, path: Path) -> ErasureData:
        info, tensors, _ = read_erasure(path)
        if info.partial:
            raise ErasureFileError(
                f"{path.name} is a partial erasure ({info.steps_done}/{info.steps_total} steps); "
                f"finish it with ZEraseTrain's resume_from before applying it"
            )
        if info.method == "uce-text":
            raise ErasureFileError(
                f"{path.name} is a uce-text weight edit; export it with `python -m zerase_core "
                f"export-lora` and load it with LoraLoaderModelOnly"
            )
        return cls(info, tensors, path)


@dataclass(frozen=True)
class ErasureEntry:
    erasure: ErasureData
    strength: float

    def __post_init__(self) -> None:  # the core's range check, before any MODEL is cloned
        label = self.erasure.path.name if self.erasure.path is not None else "the ERASURE input"
        object.__setattr__(self, "strength", check_strength(self.strength, f"strength of {label}"))


def _adapters_for(network: nn.Module, entry: ErasureEntry, allow_other_base: bool) -> AdapterSet:
    info = entry.erasure.info
    label = entry.erasure.path.name if entry.erasure.path is not None else "the ERASURE input"
    made_for = info.base_config.get("kind", "z-image")
    family = "z-image" if getattr(network, "cap_pad_token", None) is not None else "lumina2"
    if made_for != family:
        found = "unknown: weights not loaded" if any(p.is_meta for p in network.parameters()) else fingerprint(network)
        raise ErasureFileError(
            f"{label} was made for {KINDS.get(made_for, made_for)} (base fingerprint "
            f"{info.base_fingerprint}) but this MODEL is {KINDS[family]} (fingerprint {found}); "
            f"an erasure only applies to the model family it was trained on, with or without "
            f"allow_other_base"
        )
    found = fingerprint(network)
    if found != info.base_fingerprint and not allow_other_base:
        raise ErasureFileError(
            f"{label} was trained on base model {info.base_fingerprint}, but this MODEL's "
            f"fingerprint is {found}; turn on allow_other_base to apply it anyway (e.g. to a "
            f"fine-tune of the same base; the erasure strength may differ)"
        )
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
    layout = TokenLayout.from_shapes(
        [context.shape[1]] * x.shape[0], x.shape[-2:], network.patch_size, network.pad_tokens_multiple or 1
    )
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
