"""COCO-style captioned images: several captions per image (Lin et al. 2014, "Microsoft COCO:
Common Objects in Context"; the caption annotations: Chen et al. 2015, "Microsoft COCO Captions").

Layout: FOLDER holds one `captions_*.json` (or FOLDER/annotations/ does), a JSON object with
  "images":      [{"id": 9, "file_name": "000009.jpg", ...}, ...]
  "annotations": [{"image_id": 9, "caption": "A plate of food."}, ...]
and the image files in FOLDER/images/, FOLDER/<split>/ (captions_train2017.json -> train2017/)
or FOLDER itself (the first that holds the first image's file), or in `images=` if given.

RawData: "image" uint8 [N,C,H,W], "caption" (text) each image's first caption in file order,
and info["references"]["caption"]: all its captions (the first first). Training draws one
caption per image each epoch (omnivae.data.tensors); caption metrics score against all.
A malformed file (a missing key, an unknown image id, an image with no caption, an empty
caption, a missing or unreadable image file) is an InputError naming the entry.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from omnivae.data.folder import CHANNELS, normal_mode, read_header, read_image
from omnivae.data.raw import RawData
from omnivae.errors import InputError

PATTERN = "captions_*.json"


def find_annotations(root: Path) -> list[Path]:
    """The `captions_*.json` files in `root` or `root/annotations`."""
    return sorted([*root.glob(PATTERN), *(root / "annotations").glob(PATTERN)])


def _annotation_file(root: Path, annotations) -> Path:
    if annotations is not None:
        file = Path(annotations)
        file = file if file.is_absolute() or file.is_file() else root / file
        if not file.is_file():
            raise InputError(f"annotations file {file} does not exist")
        return file
    found = find_annotations(root)
    if len(found) == 1:
        return found[0]
    if found:
        names = [str(p.relative_to(root)) for p in found]
        raise InputError(f"{root} holds several caption files {names}; choose one with "
                         f"--set data.options.annotations={names[0]} (in Python: annotations=)")
    raise InputError(f"no {PATTERN} in {root} or {root / 'annotations'}: expected a COCO caption file")


def _key(entry, key: str, kind: type | tuple, where: str):
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    if key not in entry:
        raise InputError(f"{where} has no {key!r} key (it has {sorted(entry)})")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{where}: {key!r} is {value!r:.60}, expected a {getattr(kind, '__name__', 'number or string')}")
    return value


def read_annotations(file: Path) -> tuple[list[tuple[int | str, str]], dict[int | str, list[str]]]:
    """[(image id, file name)] in file order and {image id: [captions in file order]}, checked."""
    try:
        doc = json.loads(Path(file).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {file}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{file.name} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    for key in ("images", "annotations"):
        entries = _key(doc, key, list, file.name)
        if not entries:
            raise InputError(f"{file.name}: {key!r} is empty")
    images, captions = [], {}
    for i, entry in enumerate(doc["images"]):
        where = f"{file.name} images[{i}]"
        image_id, name = _key(entry, "id", (int, str), where), _key(entry, "file_name", str, where)
        if image_id in captions:
            raise InputError(f"{where}: image id {image_id!r} repeats an earlier image's")
        if not name.strip():
            raise InputError(f"{where}: 'file_name' is empty")
        images.append((image_id, name.strip()))
        captions[image_id] = []
    for i, entry in enumerate(doc["annotations"]):
        where = f"{file.name} annotations[{i}]"
        image_id, text = _key(entry, "image_id", (int, str), where), _key(entry, "caption", str, where)
        if image_id not in captions:
            raise InputError(f"{where}: image_id {image_id!r} is not the id of any entry of 'images'")
        if not text.strip():
            raise InputError(f"{where} (image_id {image_id!r}): the caption is empty")
        captions[image_id].append(text.strip())
    bare = [(image_id, name) for image_id, name in images if not captions[image_id]]
    if bare:
        raise InputError(f"{file.name}: {len(bare)} image(s) have no caption, e.g. id {bare[0][0]!r} "
                         f"({bare[0][1]}); every image needs at least one")
    return images, captions


def _image_folder(root: Path, file: Path, first: str, images) -> Path:
    if images is not None:
        folder = Path(images) if Path(images).is_absolute() else root / images
        if not folder.is_dir():
            raise InputError(f"image folder {folder} does not exist")
        return folder
    split = file.stem.removeprefix("captions_")
    candidates = [root / "images", root / split, root]
    for folder in candidates:
        if (folder / first).is_file():
            return folder
    raise InputError(f"image file {first!r} (the first in {file.name}) is in none of "
                     f"{[str(c) for c in candidates]}; name the folder with --set data.options.images=FOLDER")


def load_coco(path, annotations: str | None = None, images: str | None = None, image_size: int | None = 64,
              mode: str | None = None, max_images: int | None = None) -> RawData:
    """Images and all their captions from a COCO-style folder (see the module docstring).

    annotations: the caption file (default: the one captions_*.json). images: the image folder.
    image_size: every image resized to this square size (None: the most common size; COCO's
    photographs vary, and 640x480 RGB for every image rarely fits in memory). mode: "L", "RGB"
    or "RGBA" (None: RGB if any image has colour, else L). max_images: the first N images only.
    """
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise InputError(f"image_size must be a positive integer or None, got {image_size!r}")
    if mode not in (None, *CHANNELS):
        raise InputError(f"mode must be one of {list(CHANNELS)} or None, got {mode!r}")
    if max_images is not None and (not isinstance(max_images, (int, np.integer)) or max_images < 1):
        raise InputError(f"max_images must be a positive integer or None, got {max_images!r}")
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"data folder {root} does not exist or is not a folder")
    file = _annotation_file(root, annotations)
    entries, captions = read_annotations(file)
    entries = entries[:max_images]
    folder = _image_folder(root, file, entries[0][1], images)
    sizes, modes = [], set()
    for image_id, name in entries:
        p = folder / name
        if not p.is_file():
            raise InputError(f"image file {p} (id {image_id!r} in {file.name}) does not exist")
        try:
            size, m = read_header(p)
        except OSError as exc:
            raise InputError(f"image file {p} (id {image_id!r}) cannot be read: {exc}") from None
        sizes.append(size)
        modes.add(normal_mode(m))
    size = (image_size, image_size) if image_size else Counter(sizes).most_common(1)[0][0]
    mode = mode or ("RGB" if "RGB" in modes else "L")
    pixels = np.zeros((len(entries), CHANNELS[mode], size[1], size[0]), dtype=np.uint8)
    for i, (image_id, name) in enumerate(entries):
        try:
            pixels[i] = read_image(folder / name, mode, size)
        except OSError as exc:
            raise InputError(f"image file {folder / name} (id {image_id!r}) cannot be read: {exc}") from None
    references = np.empty(len(entries), dtype=object)
    for i, (image_id, _) in enumerate(entries):
        references[i] = tuple(captions[image_id])
    info = {"source": "coco", "path": str(root), "annotations": file.name, "references": {"caption": references}}
    ids = {"image_id": np.array([str(image_id) for image_id, _ in entries]),
           "file_name": np.array([name for _, name in entries])}
    from omnivae.modalities import ImageModality, TextModality

    kinds = {"image": ImageModality.kind, "caption": TextModality.kind}
    return RawData({"image": pixels, "caption": [r[0] for r in references]}, kinds,
                   info=info, ids=ids)
