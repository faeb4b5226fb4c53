"""The package's public names all resolve, the lazy ones included."""

from __future__ import annotations

import regnas


def test_all_names_resolve() -> None:
    for name in regnas.__all__:
        assert getattr(regnas, name) is not None, name


def test_all_is_sorted() -> None:
    assert regnas.__all__ == sorted(regnas.__all__)
