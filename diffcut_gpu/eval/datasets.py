"""Dataset readers for evaluation: BSDS500, image folders with label PNGs, COCO-Stuff-27, Cityscapes-27.

Every reader is a ``torch.utils.data.Dataset`` whose items are
``dict(image=uint8 (3, H, W) RGB tensor, gt=..., name=str)``, sorted by name, with an optional
``limit`` (first ``limit`` items). ``gt`` is an int64 ``(H, W)`` tensor of class ids with
``ignore_index`` (255) on unlabeled pixels, except for BSDS500 where it is a list of ``(H, W)``
region maps, one per annotator (use ``batch_size=1`` or a custom ``collate_fn`` with a DataLoader).
Missing roots or files raise ``FileNotFoundError`` naming the path and the expected layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from diffcut_gpu.eval.label_tables import (
    CITYSCAPES27_CLASSES,
    COCOSTUFF27_CLASSES,
    cityscapes27_lut,
    coco_stuff27_lut,
)
from diffcut_gpu.io.images import ImageReadError, read_image

__all__ = ["BSDS500", "COCOStuff27", "Cityscapes27", "ImageFolderWithLabels", "read_label_png", "read_rgb"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_rgb(path: str | Path) -> Tensor:
    """An image file as an RGB uint8 tensor ``(3, H, W)``, read by the package's reader ``io.read_image``.

    Pixels as stored (no EXIF rotation: the label maps are aligned with them), any size. A file that
    cannot be read raises ``OSError`` naming it and the reason.
    """
    try:
        rgb = read_image(path, max_pixels=None, min_side=1, exif_orientation=False)
    except ImageReadError as err:
        raise OSError(f"{path}: {err}") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a single-channel label PNG (8-bit grey, palette, or 16-bit) as an int64 ``(H, W)`` array.

    Palette PNGs (e.g. VOC) give their palette indices, which are the class ids. RGB-coded label
    images are refused: their colours need a dataset-specific colour table.
    """
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
            raise ValueError(f"{path}: expected a single-channel label PNG (mode L, P or 16-bit), got mode "
                             f"{im.mode}; convert colour-coded labels to ids first")
        arr = np.asarray(im)
    return arr.astype(np.int64)


def _require_dir(path: Path, what: str, layout: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: expected a directory at {path}, which does not exist. "
                                f"Expected layout:\n{layout}")
    return path


def _limit(items: list, limit: int | None) -> list:
    if limit is None:
        return items
    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit: expected None or a non-negative int, got {limit!r}")
    return items[:limit]


def _remap(labels: np.ndarray, lut: np.ndarray | None, ignore_index: int) -> Tensor:
    """Apply a lookup table to a label array; values beyond the table become ``ignore_index``."""
    if lut is not None:
        out = np.full(labels.shape, ignore_index, dtype=np.int64)
        inside = (labels >= 0) & (labels < lut.shape[0])
        out[inside] = lut[labels[inside]]
        labels = out
    return torch.from_numpy(labels)


class BSDS500(Dataset):
    """Berkeley Segmentation Data Set 500 (Arbelaez et al., TPAMI 2011), images with all annotators.

    Layout under ``root``: ``images/<split>/*.jpg`` and ``groundTruth/<split>/*.mat`` (MATLAB v5, same
    stem). Item ``gt`` is a list of int64 ``(H, W)`` region maps (labels start at 1), one per annotator.
    """

    LAYOUT = "  <root>/images/{train,val,test}/<id>.jpg\n  <root>/groundTruth/{train,val,test}/<id>.mat"

    def __init__(self, root: str | Path, split: str = "val", limit: int | None = None) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split: expected 'train', 'val' or 'test', got {split!r}")
        self.root = Path(root)
        _require_dir(self.root, "BSDS500 root", self.LAYOUT)
        img_dir = _require_dir(self.root / "images" / split, "BSDS500 images", self.LAYOUT)
        gt_dir = _require_dir(self.root / "groundTruth" / split, "BSDS500 ground truth", self.LAYOUT)
        images = sorted(img_dir.glob("*.jpg"))
        if not images:
            raise FileNotFoundError(f"BSDS500 images: expected *.jpg files in {img_dir}, found none")
        self.items: list[tuple[Path, Path]] = []
        for img in _limit(images, limit):
            mat = gt_dir / f"{img.stem}.mat"
            if not mat.is_file():
                raise FileNotFoundError(f"BSDS500 ground truth: expected {mat} for image {img}")
            self.items.append((img, mat))

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def read_annotations(path: str | Path) -> list[Tensor]:
        """Region maps of a BSDS ``.mat`` file: list of int64 ``(H, W)`` tensors, one per annotator."""
        try:
            from scipy.io import loadmat
        except ImportError as err:
            raise ImportError("BSDS500 needs scipy to read .mat files: pip install scipy") from err
        cells = loadmat(str(path))["groundTruth"]                               # (1, K) cell array
        return [torch.from_numpy(cells[0, k]["Segmentation"][0, 0].astype(np.int64))
                for k in range(cells.shape[1])]

    def __getitem__(self, index: int) -> dict:
        img, mat = self.items[index]
        return {"image": read_rgb(img), "gt": self.read_annotations(mat), "name": img.stem}


class ImageFolderWithLabels(Dataset):
    """Images and single-channel label PNGs paired by file stem (``a.jpg`` <-> ``a<label_suffix>.png``).

    Args:
        images_dir: folder of images (``.jpg``, ``.png``, ...; not searched recursively).
        labels_dir: folder of 8- or 16-bit label PNGs.
        label_map: optional ``{stored id: class id}``; stored ids not in it become ``ignore_index``.
            Without it the stored ids are returned as they are (255 conventionally means ignore).
        ignore_index: id written for unmapped ids (default 255).
        label_suffix: text between the stem and ``.png`` in label names (e.g. ``"_labelIds"``).
        limit: keep the first ``limit`` pairs (sorted by name).
    """

    def __init__(self, images_dir: str | Path, labels_dir: str | Path, *,
                 label_map: Mapping[int, int] | None = None, ignore_index: int = 255, label_suffix: str = "",
                 limit: int | None = None) -> None:
        layout = "  <images_dir>/<stem>.jpg|.png|...\n  <labels_dir>/<stem><label_suffix>.png"
        self.images_dir = _require_dir(Path(images_dir), "images_dir", layout)
        self.labels_dir = _require_dir(Path(labels_dir), "labels_dir", layout)
        self.ignore_index = ignore_index
        self.lut = None
        if label_map is not None:
            if not label_map or min(label_map) < 0:
                raise ValueError(f"label_map: expected a non-empty mapping of non-negative ids, "
                                 f"got {label_map!r}")
            self.lut = np.full(max(label_map) + 1, ignore_index, dtype=np.int64)
            for src, dst in label_map.items():
                self.lut[src] = dst
        images = sorted(p for p in self.images_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS)
        if not images:
            raise FileNotFoundError(f"images_dir: expected image files {_IMAGE_EXTS} in {self.images_dir}, "
                                    "found none")
        self.items: list[tuple[Path, Path]] = []
        for img in _limit(images, limit):
            lbl = self.labels_dir / f"{img.stem}{label_suffix}.png"
            if not lbl.is_file():
                raise FileNotFoundError(f"labels_dir: expected label {lbl} for image {img}")
            self.items.append((img, lbl))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        img, lbl = self.items[index]
        gt = _remap(read_label_png(lbl), self.lut, self.ignore_index)
        return {"image": read_rgb(img), "gt": gt, "name": img.stem}


class COCOStuff27(Dataset):
    """COCO-Stuff, its 182 fine labels merged into 27 supercategories (STEGO / DiffSeg / DiffCut protocol).

    Layout under ``root`` (STEGO's ``cocostuff`` folder)::

        images/<split>2017/<id>.jpg                  COCO 2017 images
        annotations/<split>2017/<id>.png             stuffthingmaps_trainval2017 (values 0..181, 255)
        curated/<split>2017/Coco164kFull_Stuff_Coarse_7.txt   curated id list (curated=True only)

    With ``curated=True`` the items are the ids of the curated list (2,175 images for val, supplied by
    the user; see ``image_list`` to point elsewhere), otherwise every label PNG of the split. ``gt`` holds
    the 27 coarse classes of :data:`COCOSTUFF27_CLASSES` and 255 for unlabeled pixels.
    """

    CLASSES = COCOSTUFF27_CLASSES
    CURATED_LIST = "Coco164kFull_Stuff_Coarse_7.txt"
    LAYOUT = ("  <root>/images/<split>2017/<id>.jpg\n  <root>/annotations/<split>2017/<id>.png\n"
              "  <root>/curated/<split>2017/Coco164kFull_Stuff_Coarse_7.txt  (curated=True)")

    def __init__(self, root: str | Path, split: str = "val", curated: bool = True,
                 image_list: str | Path | None = None, limit: int | None = None) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
        self.root = Path(root)
        _require_dir(self.root, "COCO-Stuff root", self.LAYOUT)
        sub = f"{split}2017"
        self.image_dir = _require_dir(self.root / "images" / sub, "COCO-Stuff images", self.LAYOUT)
        self.label_dir = _require_dir(self.root / "annotations" / sub, "COCO-Stuff labels", self.LAYOUT)
        self.lut = coco_stuff27_lut(255)
        if curated or image_list is not None:
            path = Path(image_list) if image_list is not None else (
                self.root / "curated" / f"{split}2017" / self.CURATED_LIST)
            if not path.is_file():
                raise FileNotFoundError(f"COCO-Stuff curated list: expected {path} (one image id per line, "
                                        f"as distributed with STEGO). Expected layout:\n{self.LAYOUT}")
            ids = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
        else:
            ids = sorted(p.stem for p in self.label_dir.glob("*.png"))
        if not ids:
            raise FileNotFoundError(f"COCO-Stuff: expected images listed for split {split!r} under "
                                    f"{self.root}, found none")
        self.ids = _limit(ids, limit)
        for i in self.ids:
            for p in (self.image_dir / f"{i}.jpg", self.label_dir / f"{i}.png"):
                if not p.is_file():
                    raise FileNotFoundError(f"COCO-Stuff: expected {p} for image id {i}. "
                                            f"Expected layout:\n{self.LAYOUT}")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        i = self.ids[index]
        gt = _remap(read_label_png(self.label_dir / f"{i}.png"), self.lut, 255)
        return {"image": read_rgb(self.image_dir / f"{i}.jpg"), "gt": gt, "name": i}


class Cityscapes27(Dataset):
    """Cityscapes fine annotations in the 27-class protocol (void ids 0..6 ignored, ids 7..33 -> 0..26).

    Layout under ``root``::

        leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
        gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

    ``gt`` holds the classes of :data:`CITYSCAPES27_CLASSES` and 255 for void pixels; ``name`` is
    ``<city>_<seq>_<frame>``.
    """

    CLASSES = CITYSCAPES27_CLASSES
    LAYOUT = ("  <root>/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png\n"
              "  <root>/gtFine/<split>/<city>/<name>_gtFine_labelIds.png")

    def __init__(self, root: str | Path, split: str = "val", limit: int | None = None) -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split: expected 'train', 'val' or 'test', got {split!r}")
        self.root = Path(root)
        _require_dir(self.root, "Cityscapes root", self.LAYOUT)
        img_dir = _require_dir(self.root / "leftImg8bit" / split, "Cityscapes images", self.LAYOUT)
        gt_dir = _require_dir(self.root / "gtFine" / split, "Cityscapes gtFine", self.LAYOUT)
        self.lut = cityscapes27_lut(255)
        labels = sorted(gt_dir.glob("*/*_gtFine_labelIds.png"), key=lambda p: p.name)
        if not labels:
            raise FileNotFoundError(f"Cityscapes gtFine: expected <city>/*_gtFine_labelIds.png under "
                                    f"{gt_dir}, found none. Expected layout:\n{self.LAYOUT}")
        self.items: list[tuple[str, Path, Path]] = []
        for lbl in _limit(labels, limit):
            name = lbl.name[: -len("_gtFine_labelIds.png")]
            img = img_dir / lbl.parent.name / f"{name}_leftImg8bit.png"
            if not img.is_file():
                raise FileNotFoundError(f"Cityscapes images: expected {img} for label {lbl}")
            self.items.append((name, img, lbl))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        name, img, lbl = self.items[index]
        gt = _remap(read_label_png(lbl), self.lut, 255)
        return {"image": read_rgb(img), "gt": gt, "name": name}
