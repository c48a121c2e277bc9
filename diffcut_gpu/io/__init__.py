"""Files in and out: any image to RGB, finding inputs, atomic per-image outputs, the run manifest."""

from .discover import Discovery, InputItem, discover_inputs
from .images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, ImageReadError, image_extensions, read_image
from .manifest import MANIFEST_DIR, Manifest, read_manifest
from .outputs import (
    FORMATS,
    SUFFIXES,
    atomic_write_bytes,
    boundaries,
    label_colors,
    label_png_bytes,
    output_paths,
    outputs_complete,
    outputs_exist,
    overlay,
    write_outputs,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_SIDE",
    "FORMATS",
    "MANIFEST_DIR",
    "SUFFIXES",
    "Discovery",
    "ImageReadError",
    "InputItem",
    "Manifest",
    "atomic_write_bytes",
    "boundaries",
    "discover_inputs",
    "image_extensions",
    "label_colors",
    "label_png_bytes",
    "output_paths",
    "outputs_complete",
    "outputs_exist",
    "overlay",
    "read_image",
    "read_manifest",
    "write_outputs",
]
