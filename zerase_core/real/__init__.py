"""Real models outside the nano world: diffusers names and configs, model files and folders people have."""
