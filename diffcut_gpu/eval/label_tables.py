"""Class tables of the 27-class unsupervised protocols (COCO-Stuff-27, Cityscapes-27) as lookup arrays.

COCO-Stuff-27
    Source: the public COCO-Stuff definitions (Caesar et al., CVPR 2018; ``github.com/nightrome/cocostuff``,
    ``labels.md`` and the ``supercategory`` field of ``stuff_*2017.json``) and the COCO 2017 thing
    categories (``instances_*2017.json``). ``stuffthingmaps_trainval2017`` PNGs store ``COCO id - 1``:
    0..90 things (80 used, 11 ids unused since COCO 2014), 91..181 stuff, 255 unlabeled. Each fine id is
    mapped to its supercategory: the 12 thing supercategories then the 15 stuff supercategories, in the
    order of the COCO-Stuff label hierarchy (the order STEGO / DiffSeg / DiffCut report). Thing and stuff
    supercategories with the same name (food, furniture) stay distinct classes. The unused thing ids keep
    their COCO 2014 supercategory; they never occur in the maps.

Cityscapes-27
    Source: the Cityscapes label table (Cordts et al., CVPR 2016; ``cityscapesScripts/helpers/labels.py``).
    ``*_gtFine_labelIds.png`` store ids 0..33. Ids 0..6 (unlabeled, ego vehicle, rectification border,
    out of roi, static, dynamic, ground) form the ``void`` category and are ignored; the remaining 27 ids
    7..33 (all non-void labels, including the 8 that the 19-class benchmark ignores: parking, rail track,
    guard rail, bridge, tunnel, polegroup, caravan, trailer) become classes ``id - 7``. This is the
    27-class protocol of PiCIE / STEGO.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CITYSCAPES27_CLASSES",
    "CITYSCAPES_ID_TO_27",
    "COCOSTUFF27_CLASSES",
    "COCOSTUFF_FINE_TO_COARSE",
    "cityscapes27_lut",
    "coco_stuff27_lut",
]

COCOSTUFF27_CLASSES: tuple[str, ...] = (
    # 12 thing supercategories
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen",
    "accessory", "animal", "outdoor", "person", "sports", "vehicle",
    # 15 stuff supercategories (8 indoor, 7 outdoor)
    "ceiling", "floor", "food-stuff", "furniture-stuff", "raw-material", "textile", "wall", "window",
    "building", "ground", "plant", "sky", "solid", "structural", "water",
)

# Fine classes per supercategory, by COCO id (stuffthingmaps value = COCO id - 1).
_COCO_SUPERCATEGORY_IDS: dict[str, tuple[int, ...]] = {
    # things (COCO ids 1..91; 12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91 are unused since 2014)
    "person": (1,),
    "vehicle": (2, 3, 4, 5, 6, 7, 8, 9),
    "outdoor": (10, 11, 12, 13, 14, 15),
    "animal": (16, 17, 18, 19, 20, 21, 22, 23, 24, 25),
    "accessory": (26, 27, 28, 29, 30, 31, 32, 33),
    "sports": (34, 35, 36, 37, 38, 39, 40, 41, 42, 43),
    "kitchen": (44, 45, 46, 47, 48, 49, 50, 51),
    "food": (52, 53, 54, 55, 56, 57, 58, 59, 60, 61),
    "furniture": (62, 63, 64, 65, 66, 67, 68, 69, 70, 71),
    "electronic": (72, 73, 74, 75, 76, 77),
    "appliance": (78, 79, 80, 81, 82, 83),
    "indoor": (84, 85, 86, 87, 88, 89, 90, 91),
    # stuff (COCO-Stuff ids 92..182)
    "textile": (92, 93, 104, 105, 109, 131, 137, 141, 152, 167, 168),
    "plant": (94, 97, 119, 124, 129, 134, 142, 163, 169),
    "building": (95, 96, 128, 151, 158, 166),
    "furniture-stuff": (98, 107, 108, 110, 112, 123, 130, 133, 156, 161, 165),
    "structural": (99, 113, 138, 146, 164),
    "raw-material": (100, 132, 139, 143),
    "floor": (101, 114, 115, 116, 117, 118),
    "ceiling": (102, 103),
    "sky": (106, 157),
    "ground": (111, 125, 126, 136, 140, 144, 145, 147, 149, 154, 159),
    "water": (120, 148, 155, 178, 179),
    "food-stuff": (121, 122, 153, 170),
    "solid": (127, 135, 150, 160, 162, 182),
    "wall": (171, 172, 173, 174, 175, 176, 177),
    "window": (180, 181),
}

COCOSTUFF_FINE_TO_COARSE: dict[int, int] = {
    coco_id - 1: COCOSTUFF27_CLASSES.index(name)
    for name, ids in _COCO_SUPERCATEGORY_IDS.items() for coco_id in ids
}
"""Fine label (stuffthingmaps value 0..181) -> coarse class (0..26)."""

CITYSCAPES27_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge",
    "tunnel", "pole", "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky",
    "person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
)

CITYSCAPES_ID_TO_27: dict[int, int] = {label_id: label_id - 7 for label_id in range(7, 34)}
"""Cityscapes label id (``*_gtFine_labelIds.png``) -> 27-class id; ids 0..6 (void) are ignored."""


def _lut(mapping: dict[int, int], size: int, ignore_index: int) -> np.ndarray:
    lut = np.full(size, ignore_index, dtype=np.int64)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


def coco_stuff27_lut(ignore_index: int = 255) -> np.ndarray:
    """``(256,)`` int64 lookup: stuffthingmaps value -> coarse class, ``ignore_index`` for 255 / unknown."""
    return _lut(COCOSTUFF_FINE_TO_COARSE, 256, ignore_index)


def cityscapes27_lut(ignore_index: int = 255) -> np.ndarray:
    """``(256,)`` int64 lookup: Cityscapes label id -> 27-class id, ``ignore_index`` for void ids."""
    return _lut(CITYSCAPES_ID_TO_27, 256, ignore_index)
