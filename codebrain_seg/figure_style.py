"""One explicit matplotlib style for every figure the project writes, whatever another library set globally.

nnU-Net's progress plot calls seaborn's ``set(font_scale=2.5)``, which changes matplotlib's *global* rcParams: a
figure drawn later in the same process (the demo's Dice chart right after the segmenter's training) came out with
oversized fonts, a cut-off title and overlapping tick labels. Every drawing function runs under
:func:`house_style`: matplotlib's own defaults plus the few settings below, restored afterwards.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is needed

# Keys that describe the session, not the look of a figure: never reset.
_SESSION_KEYS = {"backend", "backend_fallback", "interactive", "webagg.port", "webagg.address", "webagg.port_retries",
                 "webagg.open_in_browser", "tk.window_focus", "savefig.directory"}
HOUSE_STYLE: dict[str, Any] = {"font.size": 10.0, "axes.titlesize": "medium", "axes.labelsize": "medium",
                               "xtick.labelsize": "small", "ytick.labelsize": "small", "legend.fontsize": "small",
                               "figure.titlesize": "large", "axes.grid": False}

F = TypeVar("F", bound=Callable[..., Any])


def _style() -> dict[str, Any]:
    defaults = {key: value for key, value in matplotlib.rcParamsDefault.items() if key not in _SESSION_KEYS}
    return {**defaults, **HOUSE_STYLE}


@contextmanager
def house_style() -> Iterator[None]:
    """Draw under matplotlib's defaults plus :data:`HOUSE_STYLE`; the caller's rcParams come back afterwards."""
    with matplotlib.rc_context(_style()):
        yield


def styled(function: F) -> F:
    """Decorator: run a drawing function under :func:`house_style`."""
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with house_style():
            return function(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
