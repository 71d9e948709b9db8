"""Progress bars, server events, previews during training, and the interrupt check."""

from __future__ import annotations

from collections.abc import Callable

import numpy
import torch

import comfy.model_management as model_management
import comfy.utils

from ..ids import TRAIN_EVENT
from .graph_training import NextDiTDenoiser


class StepReporter:
    """`on_step` for the trainer: progress bar (with a preview every N steps), server event, interrupt check.

    `progress(phase, done, total)` (zerase_core.common.progress) shows the work before the first step (loading,
    x_t pool,
    teacher cache, shuffle bank) on the node's bar, a fresh bar per phase (ComfyUI's bar drops an update that is
    lower than the last one sent), and checks for an interrupt at each report.
    """

    def __init__(self, node_id, total: int, preview: Callable[[int], object] | None = None, preview_every: int = 0):
        self.node_id, self.total = node_id, total
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id)
        self.preview, self.preview_every = preview, preview_every
        self.phase: str | None = None
        self.phase_bar: comfy.utils.ProgressBar | None = None

    def progress(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase or self.phase_bar is None:  # the bar exists once a phase has started
            self.phase, self.phase_bar = phase, comfy.utils.ProgressBar(total, node_id=self.node_id)
        self.phase_bar.update_absolute(done, total)
        model_management.throw_exception_if_processing_interrupted()

    def __call__(self, step: int, total: int, metrics: dict) -> None:
        image = None
        if self.preview is not None and self.preview_every and (step % self.preview_every == 0 or step == total):
            image = ("JPEG", self.preview(step), 512)
        send_event(
            TRAIN_EVENT,
            {
                "node": self.node_id,
                "step": step,
                "total": total,
                "L_er": metrics.get("loss_erase"),
                "L_attn": metrics.get("loss_attention"),
                "L_pr": metrics.get("loss_preserve"),
                "lambda": metrics.get("lambda"),
                "loss": metrics.get("loss_total"),
            },
        )
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


def preview_sampler(
    denoiser: NextDiTDenoiser,
    conditioner,
    vae,
    prompt: str,
    latent_hw,
    steps: int,
    cfg: float,
    shift: float,
    seed: int = 0,
):
    """A function step -> PIL image of `prompt` sampled with the current adapters (fixed noise)."""
    from PIL import Image

    from zerase_core.model.sampling import euler_sample, guided_velocity, initial_noise, shifted_sigmas

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


def progress_bar(total: int, node_id=None):
    return comfy.utils.ProgressBar(total, node_id=node_id)
