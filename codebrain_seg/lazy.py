"""A callable imported on its first call: the method registry names every method's imputer and trainers, but a
command loads only those it runs (CoPeDiT's MONAI networks alone cost seconds of start-up on a small CPU)."""
from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """Stands for ``module:attribute`` and forwards calls to it, importing the module on the first one.

    >>> join = Lazy("os.path:join"); join("a", "b")
    'a/b'
    """

    def __init__(self, target: str) -> None:
        module, _, attribute = target.partition(":")
        if not module or not attribute:
            raise ValueError(f"a lazy target is 'module:attribute', got {target!r}")
        self.target = target
        self._value: Any = None

    def resolve(self) -> Any:
        """The attribute itself (imported once)."""
        if self._value is None:
            module, _, attribute = self.target.partition(":")
            self._value = getattr(importlib.import_module(module), attribute)
        return self._value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Lazy({self.target!r})"
