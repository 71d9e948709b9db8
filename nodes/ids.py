"""Node ids, display names, custom types and server events of the pack (mirrored by `js/constants.js`)."""

from __future__ import annotations

CATEGORY = "ZErase"

LOAD = "LoadSingleStreamDiT"
TRAIN = "ZEraseTrain"
APPLY = "ApplyErasedWeights"
COMPARE = "ErasureCompare"

ERASURE_TYPE = "ZERASE_ERASURE"  # an erasure (gated adapters + metadata) travelling along a graph edge
TRAIN_EVENT = "zerase.train"  # server event: one training step's losses and λ, for the live chart
MODELS_FOLDER = "zerase"  # folder_paths key of the pack's own models folder (erasure files)
NANO_CHOICE = "nano (bundled)"  # LoadSingleStreamDiT's entry for the bundled nano model


def display_name(thing: str) -> str:
    return f"ZErase: {thing}"
