"""Versions of regnas and the packages whose behaviour shapes its results."""

from __future__ import annotations

from importlib import metadata
import platform


_PACKAGES = ("regnas", "jax", "jaxlib", "flax", "optax", "optuna", "numpy")


def package_versions() -> dict[str, str]:
    """Return the installed versions of Python and the key packages ("missing" if absent)."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions
