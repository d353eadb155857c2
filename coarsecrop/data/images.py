"""Decode any image file into uint8 RGB, or fail with a one-line reason.

Why: uncurated data sets hold every kind of file: grayscale, palette, RGBA, CMYK and 16-bit images,
EXIF-rotated phone photos, huge scans, and broken files. The crop job must read the first kinds
correctly and record the broken ones as skipped, so every failure here is a ``BadImage`` (a ValueError)
whose message names the file and says what is wrong.

Choices:
- Transparency (RGBA, LA, palette with a transparent index) is composited on **black**, i.e. the colour
  channels are premultiplied by alpha: fully transparent pixels (whose stored colour is arbitrary) become
  0, like zero padding.
- 16-bit images (I;16, I;16B, I;16L and mode I holding 0..65535) are mapped to 8 bit by value * 255 / 65535,
  rounded: the full range is kept, nothing is clipped. Mode I with values outside 0..65535 (32-bit TIFF)
  and float images (F) are min-max stretched to 0..255.
- CMYK is converted by PIL's formula (no colour management); Adobe's inverted CMYK JPEGs are handled by PIL.
- The EXIF orientation is applied (as ``ImageOps.exif_transpose``); sizes are those of the upright image. It is
  read from the headers only (``header_orientation``), so a size read never decodes pixels: a PNG's eXIf chunk
  after its pixel data (PIL finds it only by decoding the whole image) is not read, by every path alike.
- Multi-frame files (GIF, TIFF) give their first frame.
- ``max_side``: a larger image is decoded smaller (JPEG, and the camera JPEGs PIL opens as MPO: DCT scaling
  through ``draft``, so a 100-megapixel
  JPEG never exists in memory at full size; other formats: decoded, then ``reduce`` + resize) and
  ``scale`` = original long side / returned long side. Boxes on the returned image times ``scale`` are in
  original pixels: exact along the long side, within one returned pixel along the short side (the aspect
  ratio is kept up to rounding), so one scale suffices.
- PIL's decompression-bomb guard: with ``max_side`` set, large legitimate images load (reduced); without
  it, an image over PIL's error limit (2 x ``Image.MAX_IMAGE_PIXELS``) is refused with a BadImage that
  says to pass max_side. Formats without reduced decoding (PNG, TIFF, ...) over ``MAX_FULL_DECODE_PIXELS``
  are refused rather than exhausting memory.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, JpegImagePlugin, UnidentifiedImageError

MAX_FULL_DECODE_PIXELS = 1 << 28  # 268 Mpx (~800 MB as RGB): the most we decode at full size
# torchvision's ImageNet normalisation (RGB in [0, 1]), the one our trunks see everywhere: the SSL views,
# phi in the crop strategies, the training monitor, the transfer tasks.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_ORIENTATION = 0x0112
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees
# EXIF orientation -> the transpose that makes the stored image upright (PIL's ImageOps.exif_transpose)
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_BOMB_LOCK = threading.Lock()


class BadImage(ValueError):
    """An image file that cannot be used; the message is one line naming the file and the reason."""


def _bad(path: Path, reason: str) -> BadImage:
    return BadImage(f"{path}: {reason}")


def _check_file(path: Path) -> None:
    """Missing, directory and empty files fail before PIL sees them, with a precise reason."""
    if not path.exists():
        raise _bad(path, "missing file")
    if path.is_dir():
        raise _bad(path, "is a directory, not an image file")
    try:
        size = path.stat().st_size
    except OSError as err:
        raise _bad(path, f"cannot read ({err.strerror or err})") from err
    if size == 0:
        raise _bad(path, "empty file (0 bytes)")


@contextlib.contextmanager
def _bomb_check_off():
    """Open without PIL's decompression-bomb check (we apply our own, knowing max_side)."""
    with _BOMB_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield limit
        finally:
            Image.MAX_IMAGE_PIXELS = limit


def _open(path: Path) -> tuple[Image.Image, int | None]:
    """Open the header; return the image and PIL's pixel limit at call time (None = unlimited)."""
    _check_file(path)
    with _bomb_check_off() as limit:
        try:
            return Image.open(path), limit
        except UnidentifiedImageError as err:
            raise _bad(path, "not an image (unrecognised file format)") from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            raise _bad(path, f"unreadable image header ({_one_line(err)})") from err


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def header_orientation(im: Image.Image) -> int:
    """The EXIF orientation of an opened image, 1..8 (1 when absent, unreadable or out of range), read from
    the headers without decoding a pixel. PIL's PNG reader looks for an eXIf chunk that is not in the
    headers by decoding the whole image: such a chunk (after the pixel data) counts as absent."""
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        orientation = int(im.getexif().get(_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the rotation, never the image
        return 1
    return orientation if orientation in _UPRIGHT else 1


def _upright_size(im: Image.Image, orientation: int) -> tuple[int, int]:
    """(width, height) after the EXIF orientation is applied."""
    w, h = im.size
    return (h, w) if orientation in _SWAPPED_ORIENTATIONS else (w, h)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the upright image, read from the header only (no pixel decoding)."""
    path = Path(path)
    im, _ = _open(path)
    with im:
        return _upright_size(im, header_orientation(im))


def _sixteen_to_eight(a: np.ndarray) -> np.ndarray:
    """16-bit (0..65535) -> 8-bit by value * 255 / 65535, rounded."""
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _stretch(a: np.ndarray) -> np.ndarray:
    """Min-max stretch to 0..255 (constant images give 0)."""
    a = a.astype(np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.round((np.nan_to_num(a, nan=lo) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """[H, W, 4] uint8 -> [H, W, 3] with colour premultiplied by alpha."""
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgba[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (see the module docstring for the choices)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        gray = _sixteen_to_eight(np.asarray(im))
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "I":
        a = np.asarray(im)
        gray = _sixteen_to_eight(a) if a.size and a.min() >= 0 and a.max() <= 65535 else _stretch(a)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_stretch(np.asarray(im)), "L").convert("RGB")
    if (mode == "P" and "transparency" in im.info) or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(im.convert("RGBA"))
        return Image.fromarray(_composite_on_black(rgba), "RGB")
    return im.convert("RGB")  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGBX


def target_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """Size with the long side = max_side and the aspect ratio kept (each side >= 1)."""
    if w >= h:
        return max_side, max(1, round(h * max_side / w))
    return max(1, round(w * max_side / h)), max_side


def load_image(path: str | Path, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """Decode ``path`` to (uint8 [H, W, 3] RGB, scale) with scale = original size / returned size.

    scale is 1.0 unless the image's long side exceeds ``max_side``; then the image is decoded smaller
    (long side = max_side) and scale = original long side / max_side. Raises BadImage on a missing,
    empty, non-image, truncated or corrupt file, naming the file and the reason."""
    path = Path(path)
    if max_side is not None and int(max_side) < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    im, limit = _open(path)
    with im:
        orientation = header_orientation(im)
        w0, h0 = _upright_size(im, orientation)
        long0 = max(w0, h0)
        pixels = im.size[0] * im.size[1]
        reduce = max_side is not None and long0 > max_side
        if not reduce and limit is not None and pixels > 2 * limit:
            raise _bad(path, f"{w0}x{h0} = {pixels / 1e6:.0f} Mpx is over PIL's decompression-bomb limit; "
                             "pass max_side to decode a reduced copy")
        if reduce and isinstance(im, JpegImagePlugin.JpegImageFile):  # JPEG and MPO
            tw, th = target_size(*im.size, int(max_side))
            im.draft(im.mode, (tw, th))  # DCT scaling by 1/2, 1/4 or 1/8, never below the target
        elif im.size[0] * im.size[1] > MAX_FULL_DECODE_PIXELS:
            raise _bad(path, f"{w0}x{h0} is too large to decode ({im.format} has no reduced decoding; "
                             f"limit {MAX_FULL_DECODE_PIXELS / 1e6:.0f} Mpx)")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
            reason = _one_line(err)
            if "truncated" in reason or isinstance(err, EOFError):
                raise _bad(path, f"truncated image file ({reason})") from err
            raise _bad(path, f"corrupt image data ({reason})") from err
        upright = im.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else im
        try:
            rgb = _to_rgb(upright)
        except (OSError, ValueError, MemoryError) as err:
            raise _bad(path, f"cannot convert mode {upright.mode} to RGB ({_one_line(err)})") from err
        if reduce:
            target = target_size(w0, h0, int(max_side))
            factor = min(rgb.size[0] // target[0], rgb.size[1] // target[1])
            if factor >= 2:  # cheap box reduction first, then a good resample of the rest
                rgb = rgb.reduce(factor)
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=None)
            scale = long0 / max(target)
        else:
            scale = 1.0
        array = np.array(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:  # defensive: every branch above yields RGB
        raise _bad(path, f"decoded to an unexpected shape {array.shape}")
    return array, float(scale)


def load_image_or_reason(path: str | Path, max_side: int | None = None
                         ) -> tuple[np.ndarray | None, float, str | None]:
    """(image, scale, None) or (None, 1.0, reason): for loops that record bad files instead of stopping."""
    try:
        image, scale = load_image(path, max_side)
    except BadImage as err:
        return None, 1.0, str(err)
    return image, scale, None


__all__ = ["BadImage", "load_image", "image_size", "header_orientation", "load_image_or_reason", "target_size",
           "MAX_FULL_DECODE_PIXELS"]


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 or float-in-0..255 [B, 3, H, W] -> float, torchvision mean/std normalised (in 0..255 units).

    The transfer tasks' input (``coarsecrop.evaluate``). ``normalise_unit`` is the same map computed in
    another order: the two differ by float rounding, and each keeps the committed numbers made with it."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1) * 255
    return (x.float() - mean) / std


def normalise_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float: x / 255 first, then (x - mean) / std (the trainer's object-probe monitor)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std
