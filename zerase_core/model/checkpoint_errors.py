"""The errors of reading a model file: raised by the key, detection and config code of every model family (and
re-exported by `checkpoint_keys`, where callers import them)."""


class CheckpointError(ValueError):
    """A file or state dict that cannot be loaded as a Z-Image DiT."""


class UnsupportedModelError(CheckpointError):
    """The checkpoint holds another kind of model; the message says which."""
