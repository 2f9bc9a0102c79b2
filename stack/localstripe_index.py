"""localstripe's store, indexed by object type.

localstripe lists objects of one type by scanning its whole store (`store.items()` with a
prefix test), and it lists a charge's refunds every time it returns a charge, so a charge
request costs time in proportion to everything the stand-in holds. `install()` gives the
store an index by type (kept by the store's own writes) and makes listing read only the
objects of that type. localstripe's files are not modified.
"""

from __future__ import annotations

from typing import Any

from localstripe import resources
from localstripe.errors import UserError


class TypedStore(resources.Store):  # type: ignore[misc]  # localstripe ships no types
    """The store, plus `of_type(name)`: the objects whose key is `name:<id>`, in the
    order they were first stored (the store's own order)."""

    _by_type: dict[str, dict[str, Any]]

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if ":" in key:
            self._by_type.setdefault(key.split(":", 1)[0], {})[key] = value

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._by_type.get(key.split(":", 1)[0], {}).pop(key, None)

    def clear(self) -> None:
        super().clear()
        self._by_type.clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self.reindex()

    def reindex(self) -> None:
        self._by_type = {}
        for key, value in self.items():
            if ":" in key:
                self._by_type.setdefault(key.split(":", 1)[0], {})[key] = value

    def of_type(self, name: str) -> list[Any]:
        return list(self._by_type.get(name, {}).values())


def _list_all(cls: Any, /, url: str | None, limit: Any = None, starting_after: Any = None,
              **kwargs: Any) -> Any:
    """localstripe's base listing (subclasses filter its result), from the index."""
    if kwargs:
        raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
    listing = resources.List(url, limit=limit, starting_after=starting_after)
    listing._list = resources.store.of_type(cls.object)
    return listing


def install() -> None:
    """Index localstripe's one store in place (every module holds that same object)."""
    resources.store.__class__ = TypedStore
    resources.store.reindex()
    resources.StripeObject._api_list_all = classmethod(_list_all)
