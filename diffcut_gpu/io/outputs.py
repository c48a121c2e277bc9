"""Per-image outputs, each written atomically: colour overlay, 16-bit label PNG, ``.npy``, hierarchy JSON.

For an input with key ``k`` (see `discover_inputs`) in output folder ``out``:

=========  ==========================  ==============================================================
format     file                        content
=========  ==========================  ==============================================================
overlay    ``out/k.overlay.png``       RGB: the image blended 50/50 with a label colour map, segment
                                       boundaries drawn in white
png16      ``out/k.labels.png``        16-bit grayscale PNG, pixel value = segment label (0, 1, ...)
npy        ``out/k.labels.npy``        ``(H, W)`` ``uint16`` label array (``numpy.load``)
json       ``out/k.json``              hierarchy tree, threshold, number of segments, source, options
=========  ==========================  ==============================================================

Every file is written to a temporary file in the same folder, flushed and fsynced, then moved into
place with ``os.replace``: a reader (or a resumed run) sees either the complete old file, the complete
new file, or nothing; a killed process leaves at most a hidden ``.*.tmp`` file behind.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "FORMATS",
    "SUFFIXES",
    "atomic_write_bytes",
    "boundaries",
    "label_colors",
    "label_png_bytes",
    "output_paths",
    "outputs_complete",
    "outputs_exist",
    "overlay",
    "write_outputs",
]

#: File suffix of every output format, appended to the input's key.
SUFFIXES: dict[str, str] = {
    "overlay": ".overlay.png",
    "png16": ".labels.png",
    "npy": ".labels.npy",
    "json": ".json",
}
FORMATS: tuple[str, ...] = tuple(SUFFIXES)

_TMP_SUFFIX = ".tmp"


def output_paths(out_dir: str | os.PathLike, key: str, formats: Sequence[str]) -> dict[str, Path]:
    """``{format: path}`` of the outputs of the input with ``key`` (a POSIX relative path, no extension)."""
    unknown = [f for f in formats if f not in SUFFIXES]
    if unknown:
        raise ValueError(f"formats: expected a subset of {list(FORMATS)}, got {unknown}")
    base = Path(out_dir) / Path(*key.split("/"))
    return {f: base.with_name(base.name + SUFFIXES[f]) for f in formats}


def outputs_exist(paths: Mapping[str, Path]) -> bool:
    """True when every output file exists (what a resumed run checks before redoing an image)."""
    return all(p.is_file() for p in paths.values())


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def _file_complete(path: Path) -> bool:
    """A cheap check that ``path`` holds a whole output, not an empty or cut-off one: a PNG starts with
    its signature and ends with IEND, a ``.npy`` has exactly the bytes its header announces, a JSON
    file ends with ``}`` and a newline and parses. Reads at most the head and tail (the JSON, a few KB, whole)."""
    try:
        size = path.stat().st_size
        if not path.is_file() or size == 0:
            return False
        with open(path, "rb") as fh:
            if path.name.endswith(".png"):
                head = fh.read(len(_PNG_SIGNATURE))
                fh.seek(max(size - len(_PNG_END), 0))
                return head == _PNG_SIGNATURE and fh.read() == _PNG_END
            if path.name.endswith(".npy"):
                fmt = np.lib.format
                version = fmt.read_magic(fh)
                read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
                if version not in read_header:
                    return False
                shape, _fortran, dtype = read_header[version](fh)
                return size == fh.tell() + math.prod(shape) * dtype.itemsize
            if path.name.endswith(".json"):  # written as one object ending in "}\n"
                data = fh.read()
                return data.endswith(b"}\n") and isinstance(json.loads(data.decode("utf-8")), dict)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return True


def outputs_complete(paths: Mapping[str, Path]) -> bool:
    """True when every output file exists and is whole (see `_file_complete`): what a resumed run trusts.

    Outputs are written atomically, so a partial file only appears when something else cut it (a full
    disk under another writer, a copy that stopped, a user's ``truncate``); it is then redone."""
    return all(_file_complete(Path(p)) for p in paths.values())


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def label_colors(num: int) -> np.ndarray:
    """``(num, 3)`` ``uint8`` distinct colours: hues spaced by the golden angle, alternating brightness."""
    golden = (math.sqrt(5) - 1) / 2
    colors = [
        colorsys.hsv_to_rgb((i * golden) % 1.0, 0.55 + 0.35 * ((i // 2) % 2), 0.95 - 0.25 * (i % 2))
        for i in range(max(num, 0))
    ]
    return (np.asarray(colors, dtype=np.float64).reshape(-1, 3) * 255 + 0.5).astype(np.uint8)


def boundaries(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """``(H, W)`` bool: pixels whose right or lower neighbour has another label, thickened to ``width``."""
    edge = np.zeros(labels.shape, dtype=bool)
    dx = labels[:, 1:] != labels[:, :-1]
    dy = labels[1:, :] != labels[:-1, :]
    edge[:, :-1] |= dx
    edge[:-1, :] |= dy
    for _ in range(max(width, 1) - 1):  # grow by one pixel in each direction per step
        grown = edge.copy()
        grown[1:, :] |= edge[:-1, :]
        grown[:-1, :] |= edge[1:, :]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    return edge


def overlay(image: np.ndarray, labels: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` ``uint8``: ``image`` blended with the label colours, boundaries in white.

    Args:
        image: ``(H, W, 3)`` ``uint8`` RGB.
        labels: ``(H, W)`` non-negative integer labels of the same size.
        alpha: weight of the colour map.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels: expected shape {image.shape[:2]} (the image's), got {labels.shape}")
    colors = label_colors(int(labels.max(initial=0)) + 1)[labels]
    mixed = (1 - alpha) * image.astype(np.float32) + alpha * colors.astype(np.float32)
    out = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    width = max(1, round(min(labels.shape) / 400))
    out[boundaries(labels, width)] = 255
    return out


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def label_png_bytes(labels: np.ndarray) -> bytes:
    """``(H, W)`` labels in ``[0, 65535]`` -> bytes of a 16-bit grayscale PNG."""
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise ValueError(f"labels: expected values in [0, 65535] for a 16-bit PNG, got max {labels.max()}")
    return _png_bytes(Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint16)))


def _npy_bytes(labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(labels, dtype=np.uint16), allow_pickle=False)
    return buf.getvalue()


def _json_safe(value):
    """Replace NaN / inf floats by ``None`` (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _json_bytes(record: Mapping) -> bytes:
    """Strict JSON, one key per line, and one line per element of list values of dicts (tree nodes)."""
    record = _json_safe(dict(record))
    lines = []
    for key, value in record.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows = ",\n  ".join(json.dumps(v, allow_nan=False) for v in value)
            lines.append(f" {json.dumps(key)}: [\n  {rows}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, allow_nan=False)}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode("utf-8")


def write_outputs(
    paths: Mapping[str, Path],
    image: np.ndarray,
    labels: np.ndarray,
    record: Mapping | None = None,
    *,
    fsync: bool = True,
) -> None:
    """Write every output in ``paths`` (from `output_paths`), each atomically; JSON last.

    Args:
        paths: ``{format: path}``.
        image: ``(H, W, 3)`` ``uint8`` RGB at the original size (for the overlay).
        labels: ``(H, W)`` integer labels at the original size.
        record: JSON content (hierarchy, threshold, options ...); needed when ``"json"`` is in ``paths``.
    """
    if labels.shape != image.shape[:2]:
        raise ValueError(f"labels: expected shape {image.shape[:2]} (the image's), got {labels.shape}")
    writers = {
        "png16": lambda: label_png_bytes(labels),
        "npy": lambda: _npy_bytes(labels),
        "overlay": lambda: _png_bytes(Image.fromarray(overlay(image, labels))),
    }
    for fmt in ("png16", "npy", "overlay"):
        if fmt in paths:
            atomic_write_bytes(paths[fmt], writers[fmt](), fsync=fsync)
    if "json" in paths:
        if record is None:
            raise ValueError("record: expected the JSON content when 'json' is among the formats, got None")
        atomic_write_bytes(paths["json"], _json_bytes(record), fsync=fsync)
