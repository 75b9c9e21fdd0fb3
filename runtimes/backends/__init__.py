"""Runtime backends: one file each, behind :class:`~edgepack.runtimes.backends.base.Backend`."""

from .base import (
    DELEGATE_ERRORS,
    Backend,
    Engine,
    backends_for,
    get_backend,
    register_backend,
    registered_backends,
    unregister_backend,
)

__all__ = [
    "DELEGATE_ERRORS",
    "Backend",
    "Engine",
    "backends_for",
    "get_backend",
    "register_backend",
    "registered_backends",
    "unregister_backend",
]
