"""regnas: search the AnyNet and RegNet design spaces with Optuna, train with JAX and Flax.

The architecture maths (`RegNetParams`, `AnyNetSpec`, `complexity`) imports only numpy; the names
that need JAX or Optuna load on first use, so ``from regnas import complexity`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from regnas.complexity import complexity
from regnas.regnet import RegNetParams
from regnas.spec import AnyNetSpec, StageSpec


__version__ = "0.1.0"

__all__ = [
    "AnyNet",
    "AnyNetSpec",
    "Architecture",
    "RegNetParams",
    "SearchConfig",
    "StageSpec",
    "TrainConfig",
    "Trainer",
    "build_model",
    "complexity",
    "load_architecture",
    "load_trained",
    "run_search",
]

_LAZY = {
    "AnyNet": "regnas.models",
    "Architecture": "regnas.archive",
    "SearchConfig": "regnas.study",
    "TrainConfig": "regnas.engine",
    "Trainer": "regnas.engine",
    "build_model": "regnas.models",
    "load_architecture": "regnas.archive",
    "load_trained": "regnas.trained",
    "run_search": "regnas.workers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'regnas' has no attribute {name!r}")
