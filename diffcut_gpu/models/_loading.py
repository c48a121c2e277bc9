"""What both backbones' ``from_pretrained`` do alike: hub name or local folder, dtype keyword, messages.

* `model_source`: is ``name_or_path`` a local folder (absolute, ``./``, ``~``, or existing) or a hub
  name? A local path that is not a folder fails at once, before any library is asked.
* `offline_hint`: what to do when loading failed: for a hub name, fetch the snapshot elsewhere and pass
  the folder; for a local folder, never "download" it, say what the folder must hold.
* `transformers_dtype`: transformers 5 renamed ``torch_dtype`` to ``dtype``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

__all__ = [
    "ModelSource",
    "first_line",
    "model_source",
    "offline_hint",
    "transformers_checkpoint",
    "transformers_dtype",
]


@dataclass(frozen=True)
class ModelSource:
    """``name`` as given, ``path`` to pass to ``from_pretrained`` (the expanded folder or the hub name)."""

    name: str
    path: str
    local: bool


def model_source(name_or_path: str | os.PathLike, *, holds: str) -> ModelSource:
    """Classify ``name_or_path``; raise ``FileNotFoundError`` for a local path that is not a folder.

    ``holds`` says what the folder should contain (for the message), e.g. "a diffusers pipeline snapshot".
    """
    name = os.fspath(name_or_path)
    expanded = os.path.expanduser(name)
    local = os.path.isabs(expanded) or name.startswith((".", "~")) or os.path.exists(expanded)
    if local and not os.path.isdir(expanded):
        what = "is a file" if os.path.exists(expanded) else "does not exist"
        raise FileNotFoundError(
            f"name_or_path: expected a folder holding {holds}, got '{name}', which {what}. Check the path "
            "(--model-path on the command line; set HF_HUB_OFFLINE=1 so that nothing tries the network)."
        )
    return ModelSource(name=name, path=expanded if local else name, local=local)


def offline_hint(source: ModelSource, *, holds: str, python: str) -> str:
    """The sentence after a loading error: how to get a usable local folder (see the module docstring).

    ``python`` is the Python call with ``PATH`` where the folder goes."""
    if source.local:
        return (
            f"The folder must hold {holds}; check that it is complete (an interrupted copy misses files). "
            f"Command line: --model-path {source.name} with HF_HUB_OFFLINE=1; Python: "
            f"{python.replace('PATH', source.name)}."
        )
    return (
        f"Without network access, download the snapshot where there is network (`huggingface-cli download "
        f"{source.name}`), copy the folder over and point at it: `--model-path /path/to/snapshot` with "
        f"HF_HUB_OFFLINE=1 set (Python: {python.replace('PATH', '/path/to/snapshot')})."
    )


def transformers_checkpoint(folder: str) -> str | None:
    """The ``model_type`` of a transformers checkpoint folder (``config.json`` at the top, no diffusers
    ``model_index.json``), or ``None``: used to point a ViT folder given as diffusion model to the ViT loader."""
    config = os.path.join(folder, "config.json")
    if not os.path.isfile(config) or os.path.isfile(os.path.join(folder, "model_index.json")):
        return None
    try:
        with open(config, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return None
    return str(value.get("model_type") or "unknown") if isinstance(value, dict) else None


def transformers_dtype(transformers, dtype: torch.dtype | None) -> dict:
    """``{"dtype": dtype}`` for transformers >= 5, ``{"torch_dtype": dtype}`` before; ``{}`` for None."""
    if dtype is None:
        return {}
    major = int(transformers.__version__.split(".")[0])
    return {"dtype" if major >= 5 else "torch_dtype": dtype}


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
