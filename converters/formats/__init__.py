"""Output formats, one folder each (``tflite/``, ``onnx/``) behind :class:`~.base.ModelFormatPlugin`.

A folder has the same files: ``source.py`` (load a source), ``export.py`` or ``quantize.py`` (make the model),
``inspect.py`` (read what a file needs), ``pipeline.py`` (the plugin class, registered by decorator).
"""

from edgepack.converters.formats.base import (
    Description,
    InputInfo,
    ModelFormatPlugin,
    Source,
    format_claiming,
    get_format,
    register_format,
    registered_formats,
    unregister_format,
)

__all__ = [
    "Description",
    "InputInfo",
    "ModelFormatPlugin",
    "Source",
    "format_claiming",
    "get_format",
    "register_format",
    "registered_formats",
    "unregister_format",
]
