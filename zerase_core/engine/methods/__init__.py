"""Training methods by name: Z-Erase and the baselines, each one small class in its own file of this package.

Adding a method is adding one file here that defines a `Method` subclass decorated with `@register`.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Method, StepLosses, method, method_names, register, shuffles

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
