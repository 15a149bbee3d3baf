"""Image folders as input data: decoded with Pillow, preprocessed for the model, labels from class subfolders.

``--calibration-images DIR`` / ``--eval-images DIR``. A folder with class subfolders gives labels as
torchvision's ``ImageFolder`` does: classes are the subfolder names sorted, each image's label the index
of its subfolder (images found recursively inside it). A folder of images alone gives unlabelled samples.
Files ending .png .jpg .jpeg .bmp .webp (any case) are images; other files are skipped.

Preprocessing: the model folder's image processor (``transformers.AutoImageProcessor``) when there is
one; otherwise convert to RGB (or L for a 1-channel input), resize to ``--image-size`` H,W with bilinear
resampling (as ``ViTImageProcessor`` does; no crop), scale to [0, 1], normalise with ``--mean`` / ``--std``
(default: ImageNet's), giving float32 NCHW (NHWC when the model's input is laid out so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.artifact import IOSpec
from compressor.errors import UsageError
from compressor.inputs import SampleData

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_SUFFIXES", "ImageFiles", "ImageLayout", "image_layout",
           "image_sample_data", "list_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
#: torchvision's ImageNet normalisation (RGB, on [0, 1] pixels).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageFiles:
    """The images of a folder, in a fixed order.

    Attributes:
        paths: Image files (class by class, each sorted by path).
        labels: int64 ``[images]`` class index of each (None for a folder without class subfolders).
        classes: Class names (sorted subfolder names), index = label; None without subfolders.
    """

    paths: list[Path]
    labels: np.ndarray | None
    classes: list[str] | None


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def list_images(folder: Path) -> ImageFiles:
    """The image files of ``folder`` and their labels (torchvision ``ImageFolder`` layout).

    Raises:
        UsageError: Not a folder; no images; images directly in a folder that also has class subfolders; a
            class subfolder without images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"image folder not found: {folder}" + ("; give a folder of images (class subfolders give "
                                                                 "labels)" if folder.is_file() else ""))
    subdirs = sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)
    loose = sorted(p for p in folder.iterdir() if _is_image(p))
    if subdirs and any(any(_is_image(p) for p in d.rglob("*")) for d in subdirs):
        if loose:
            raise UsageError(f"{folder} has class subfolders and also {len(loose)} images directly in it (e.g. "
                             f"{loose[0].name}); put every image in its class subfolder, or use a folder of images only")
        paths: list[Path] = []
        labels: list[int] = []
        for index, d in enumerate(subdirs):
            found = sorted(p for p in d.rglob("*") if _is_image(p))
            if not found:
                raise UsageError(f"class folder {d} holds no images ({', '.join(IMAGE_SUFFIXES)}); remove it or add "
                                 "images (classes are the sorted subfolder names, as torchvision's ImageFolder)")
            paths += found
            labels += [index] * len(found)
        return ImageFiles(paths, np.asarray(labels, dtype=np.int64), [d.name for d in subdirs])
    if not loose:
        raise UsageError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); put images in it, or in one "
                         "subfolder per class")
    return ImageFiles(loose, None, None)


@dataclass(frozen=True)
class ImageLayout:
    """How the model takes images.

    Attributes:
        name: The image input's name.
        channels: 1 (grayscale, Pillow mode ``L``) or 3 (RGB).
        size: ``(height, width)`` the model fixes, or None.
        channels_last: True for NHWC inputs, False for NCHW.
        dtype: The input's float dtype.
    """

    name: str
    channels: int
    size: tuple[int, int] | None
    channels_last: bool = False
    dtype: str = "float32"


def image_layout(io: IOSpec | None, module: Any = None) -> ImageLayout:
    """The image input of a model: from its input spec, else from a PyTorch module's first Conv2d.

    Raises:
        UsageError: Not exactly one input, an input that is not a float ``[batch, C, H, W]`` (or NHWC) tensor, or
            a channel count other than 1 or 3.
    """
    if io is None or not io.inputs:
        name = "input"
        channels = 3
        if module is not None:
            from compressor.inputs import _forward_arg_names

            args = _forward_arg_names(module)
            name = args[0] if args else name
            import torch

            conv = next((m for m in module.modules() if isinstance(m, torch.nn.Conv2d)), None)
            channels = int(conv.in_channels) if conv is not None else 3
        if channels not in (1, 3):
            raise UsageError(f"the model's first convolution takes {channels} channels; image data gives 1 (L) or "
                             "3 (RGB): use --calibration-data/--eval-data .npz")
        return ImageLayout(name, channels, None)
    if len(io.inputs) != 1:
        raise UsageError(f"image data fills one image input, but the model has {len(io.inputs)} inputs "
                         f"{io.input_names}; use --calibration-data/--eval-data .npz")
    spec = io.inputs[0]
    if len(spec.shape) != 4 or not spec.dtype.startswith("float"):
        raise UsageError(f"image data needs a float [batch, channels, height, width] input; '{spec.name}' is "
                         f"{spec.dtype} {list(spec.shape)}")

    def fixed(d: Any) -> int | None:
        return d if isinstance(d, int) and d > 0 else None

    c1, c3 = fixed(spec.shape[1]), fixed(spec.shape[3])
    channels_last = c1 not in (1, 3) and c3 in (1, 3)
    channels = c3 if channels_last else (c1 or 3)
    if channels not in (1, 3):
        raise UsageError(f"input '{spec.name}' takes {channels} channels; image data gives 1 (L) or 3 (RGB): use "
                         "--calibration-data/--eval-data .npz")
    h, w = (spec.shape[1], spec.shape[2]) if channels_last else (spec.shape[2], spec.shape[3])
    size = (fixed(h), fixed(w)) if fixed(h) and fixed(w) else None
    return ImageLayout(spec.name, channels, size, channels_last, spec.dtype)


def _open(path: Path, mode: str) -> Any:
    """Decode one image with Pillow and convert it to ``mode``.

    Raises:
        UsageError: The file cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UsageError(f"cannot read image {path} ({reason}); remove or replace the file") from e


def image_sample_data(folder: Path, *, io: IOSpec | None, module: Any = None, processor: Any = None,
                      image_size: tuple[int, ...] | None = None, mean: tuple[float, ...] | None = None,
                      std: tuple[float, ...] | None = None, batch: int = 64) -> tuple[SampleData, dict[str, Any]]:
    """An image folder as the model's input array (plus labels from class subfolders).

    Args:
        folder: The image folder (see :func:`list_images`).
        io: The model's input spec, when known (input name, channels, a fixed size, layout).
        module: The PyTorch module when ``io`` is None (channels from its first Conv2d).
        processor: A ``transformers`` image processor (a Hugging Face folder's): it preprocesses unless
            ``image_size``, ``mean`` or ``std`` is given, then resize and normalise, with the processor's mean
            and std where the flags give none. None: resize and normalise.
        image_size: ``(H,)`` or ``(H, W)``; default: the size the model fixes.
        mean: Per-channel mean on [0, 1] pixels (1 or C values); default ImageNet's (their average for 1 channel).
        std: Per-channel standard deviation; default ImageNet's.
        batch: Images decoded and preprocessed at a time.

    Returns:
        ``(SampleData, notes)``: one float32 array ``[images, C, H, W]`` (``[images, H, W, C]`` for an NHWC
        input) keyed by the input's name, labels int64 ``[images]`` or None; notes hold ``path``, ``images``,
        ``classes``, ``size`` and the ``preprocessing`` used.

    Raises:
        UsageError: See :func:`list_images` and :func:`image_layout`; an unreadable image (named); a size the
            model does not fix and no ``image_size``; ``image_size`` against the model's fixed size; ``mean`` /
            ``std`` of the wrong length or a std that is not positive.
    """
    files = list_images(folder)
    layout = image_layout(io, module)
    mode = "L" if layout.channels == 1 else "RGB"
    notes: dict[str, Any] = {"path": str(folder), "images": len(files.paths), "classes": files.classes}
    chunks: list[np.ndarray] = []
    if processor is not None and image_size is None and mean is None and std is None:
        for start in range(0, len(files.paths), batch):
            images = [_open(p, mode) for p in files.paths[start:start + batch]]
            try:
                px = processor(images=images, return_tensors="np")["pixel_values"]
            except Exception as e:  # noqa: BLE001 - any processor failure is a data/setup problem for the user
                raise UsageError(f"the image processor failed on {files.paths[start].parent} ({type(e).__name__}: "
                                 f"{str(e).strip()[:160]}); pass --image-size, --mean and --std instead") from e
            chunks.append(np.asarray(px, dtype=np.float32))
        arr = np.concatenate(chunks)
        if layout.channels_last and arr.shape[1] == layout.channels:
            arr = arr.transpose(0, 2, 3, 1)
        notes["preprocessing"] = f"image processor {type(processor).__name__} of the model folder"
    else:
        if processor is not None:  # flags replace the processor's settings one by one
            mean = mean or tuple(getattr(processor, "image_mean", None) or ()) or None
            std = std or tuple(getattr(processor, "image_std", None) or ()) or None
        size = _size(image_size, layout)
        m = _per_channel(mean, IMAGENET_MEAN, layout.channels, "--mean")
        s = _per_channel(std, IMAGENET_STD, layout.channels, "--std")
        if (s <= 0).any():
            raise UsageError(f"--std must be positive, got {','.join(f'{v:g}' for v in s)}")
        from PIL import Image

        for path in files.paths:
            img = _open(path, mode)
            if img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            x = np.asarray(img, dtype=np.float32).reshape(size[0], size[1], layout.channels) / 255.0
            chunks.append(((x - m) / s)[None])
        arr = np.concatenate(chunks)
        if not layout.channels_last:
            arr = arr.transpose(0, 3, 1, 2)
        notes["preprocessing"] = (f"{mode}, bilinear resize to {size[0]}x{size[1]}, /255, mean "
                                  f"{','.join(f'{v:g}' for v in m)}, std {','.join(f'{v:g}' for v in s)}")
        notes["size"] = list(size)
    arr = np.ascontiguousarray(arr.astype(layout.dtype))
    if "size" not in notes:
        notes["size"] = list(arr.shape[1:3] if layout.channels_last else arr.shape[2:4])
    return SampleData({layout.name: arr}, files.labels, str(folder)), notes


def _size(image_size: tuple[int, ...] | None, layout: ImageLayout) -> tuple[int, int]:
    if image_size:
        size = (image_size[0], image_size[-1])
        if layout.size is not None and size != layout.size:
            raise UsageError(f"--image-size {size[0]},{size[1]} differs from the {layout.size[0]}x{layout.size[1]} "
                             f"the model's input '{layout.name}' fixes; drop --image-size or use that size")
        return size
    if layout.size is None:
        raise UsageError(f"the model does not fix the height and width of '{layout.name}', so image data needs "
                         "--image-size H[,W] (e.g. 224)")
    return layout.size


def _per_channel(values: tuple[float, ...] | None, default: tuple[float, ...], channels: int, flag: str) -> np.ndarray:
    if values is None:
        values = default if channels == 3 else (sum(default) / 3,)
    if len(values) not in (1, channels):
        raise UsageError(f"{flag} has {len(values)} values but the model takes {channels} channel"
                         f"{'s' if channels > 1 else ''}; give 1 or {channels}")
    return np.broadcast_to(np.asarray(values, dtype=np.float32), (channels,)).copy()
