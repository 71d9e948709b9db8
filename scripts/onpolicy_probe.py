"""Issue 18 probe (not a default): after `at` of `steps` steps, re-sample the erase loss's x_t states with the
student itself (the erase prompts from the same seeds, adapters on at strength 1) and train the rest there, so the
student learns the target where it will actually sample (exposure bias). Writes runs/x18/NAME-CONCEPT.safetensors;
score it with `scripts/anchor_variants.py NAME CONCEPT ...` (which reuses the file).

    PYTHONPATH=. python scripts/onpolicy_probe.py NAME CONCEPT STEPS AT [REFRESHES]
"""
import sys, time
import torch
torch.set_num_threads(1)
from pathlib import Path
from zerase_core.engine.erase_config import EraseConfig
from zerase_core.engine.pool import pool_seeds
from zerase_core.engine.trajectory import sample_trajectories
from zerase_core.nano.world import NanoWorld
from zerase_core.nano.erasure_runs import erase

name, concept, steps, at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
refreshes = int(sys.argv[5]) if len(sys.argv) > 5 else 1
world = NanoWorld.load()
held = {}


def ready(trainer):
    held["trainer"] = trainer


def refresh(trainer):
    pool, config = trainer.pool, trainer.config
    seeds = pool_seeds(config.seed, pool.size)
    t = time.time()
    with torch.no_grad():
        states = sample_trajectories(trainer._velocity, trainer.conditioner, pool.prompts, seeds, config.latent_size,
                                     pool.states.shape[2], pool.sigmas, config.sample_cfg, 32)
    pool.target_states = states.to(pool.store_device)
    pool.teacher = {key: value for key, value in pool.teacher.items() if key[2] not in ("target", "concept")}
    pool.segments = None  # the kept refiner outputs were for the old states
    print(f"refreshed {pool.size} trajectories at step {trainer.step} in {time.time() - t:.0f}s", flush=True)


def on_step(step, total, metrics):
    trainer = held["trainer"]
    every = (total - at) // refreshes if refreshes > 1 else total
    if step >= at and (step - at) % every == 0 and step < total:
        refresh(trainer)


out = Path(f"runs/x18/{name}-{concept}.safetensors")
t = time.time()
erase(world, [concept], EraseConfig(steps=steps), out, choose_strength=False, on_step=on_step, on_ready=ready)
print("train_s", round(time.time() - t), flush=True)
