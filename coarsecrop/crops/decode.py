"""Where the crop job decodes its images: on the CPU in the DataLoader workers, or JPEGs on the GPU (nvJPEG).

    cpu: worker: file --load_image (PIL)--> uint8 [3, H, W], scale
    gpu: worker: file bytes --header facts--> a baseline JPEG: the bytes as they are; anything else: load_image
         main:   the batch's JPEG bytes --one decode_jpeg(device)--> EXIF orientation --max_side resize--> on device

Either way the crop step gets today's items, ``(index, uint8 [3, H, W] tensor, scale)`` or
``(index, None, reason)``; on the GPU path every image of a batch is on the job's device.

Which files the GPU decodes (``route``): JPEGs whose frame is baseline or extended sequential Huffman
(SOF0 / SOF1), 8-bit, colour RGB (YCbCr) or grayscale, that end with the end-of-image marker and hold at
most ``GPU_MAX_PIXELS`` stored pixels. Everything else (PNG and other formats, CMYK / YCCK, progressive or
arithmetic-coded, 12-bit, Adobe-RGB stored without YCbCr, truncated-looking, larger, unreadable headers)
takes today's ``load_image`` path in the worker, so its pixels and its skip reason are exactly the CPU
job's. A batch that nvJPEG refuses is retried image by image; an image it refuses alone is decoded by
``load_image`` in the main process, which names the exact reason when the file is bad.

GPU pixels are not PIL's: nvJPEG's IDCT and chroma upsampling differ from libjpeg's by a few levels, and a
large image is decoded at full size and resized with antialiased bilinear interpolation where PIL decodes
it reduced (DCT scaling) and resizes the rest. Sizes and ``scale`` follow load_image's rule exactly
(``target_size``). That is why a GPU-decoded job records ``"decode": "gpu"`` in its configuration.
"""

from __future__ import annotations

from collections import Counter
import functools
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from coarsecrop.data.images import BadImage, header_orientation, load_image, target_size

DECODE_MODES = ("auto", "cpu", "gpu")
GPU_MAX_PIXELS = 1 << 24  # 16.8 Mpx stored (e.g. 5000 x 3300): larger JPEGs decode reduced on the CPU
GPU_FRAMES = (0xC0, 0xC1)  # SOF0 baseline, SOF1 extended sequential (Huffman): nvJPEG's batched decoder


# ---------------------------------------------------------------- the CPU path (unchanged)

def cpu_item(i: int, file: str, max_side: int) -> tuple:
    """load_image -> (i, uint8 [3, H, W], scale), or (i, None, reason) with the file's name left out."""
    try:
        array, scale = load_image(file, max_side=max_side)  # [H, W, 3] uint8
    except BadImage as err:  # "<path>: <reason>"; the line already names the file
        return i, None, str(err).removeprefix(f"{file}: ")
    except Exception as err:  # noqa: BLE001 - bad input never stops a job
        return i, None, f"could not read image: {type(err).__name__}: {err}".replace(file, "<file>")
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()  # [3, H, W]
    return i, image, float(scale)


# ---------------------------------------------------------------- header facts and the route

def jpeg_frame(data: bytes) -> tuple[int, int] | None:
    """(SOF marker, sample precision) of a JPEG's first frame header, or None when there is none.

    Walks the marker segments from SOI; stops at the first SOFn (0xC0..0xCF but DHT C4, JPG C8, DAC CC)."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return (marker, data[pos + 4]) if pos + 4 < len(data) else None
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            return None
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return None


def header_facts(data: bytes) -> dict | None:
    """What the route needs from a file's bytes, reading headers only; None when PIL cannot open them.

    ``format``, stored ``size`` (w, h), PIL ``mode``, ``bits`` per sample, ``progressive``, ``frame``
    (JPEG SOF marker), EXIF ``orientation`` (1 when absent or unreadable, as load_image), ``adobe_transform``
    and ``complete`` (a JPEG ending with its end-of-image marker)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            orientation = header_orientation(im)
            facts = {"format": im.format, "size": tuple(im.size), "mode": im.mode,
                     "bits": int(getattr(im, "bits", 16 if im.mode.startswith("I;16") else 8)),
                     "progressive": bool(im.info.get("progressive") or im.info.get("progression")),
                     "orientation": orientation, "adobe_transform": im.info.get("adobe_transform")}
    except Exception:  # noqa: BLE001 - load_image names the exact reason
        return None
    frame = jpeg_frame(data) if facts["format"] == "JPEG" else None
    facts["frame"] = None if frame is None else frame[0]
    facts["complete"] = data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9")
    return facts


def route(facts: dict | None) -> str:
    """"gpu" for a file nvJPEG decodes in a batch, else why it takes load_image's path (one short word)."""
    if facts is None:
        return "unreadable"
    if facts["format"] != "JPEG":
        return str(facts["format"]).lower()
    if facts["mode"] == "CMYK":
        return "cmyk"
    if facts["progressive"]:
        return "progressive"
    if facts["frame"] not in GPU_FRAMES:
        return "frame"
    if facts["bits"] != 8:
        return f"{facts['bits']}-bit"
    if facts["mode"] not in ("RGB", "L") or (facts["mode"] == "RGB" and facts["adobe_transform"] == 0):
        return "mode"
    if facts["size"][0] * facts["size"][1] > GPU_MAX_PIXELS:
        return "huge"
    if not facts["complete"]:
        return "truncated"
    return "gpu"


class Encoded:
    """A baseline JPEG's bytes (uint8 [N] tensor) on their way from a worker to the batched GPU decode."""

    __slots__ = ("data", "orientation", "file")

    def __init__(self, data: torch.Tensor, orientation: int, file: str):
        self.data, self.orientation, self.file = data, orientation, file


def worker_item(i: int, file: str, max_side: int) -> tuple:
    """The GPU path's worker step: (i, Encoded, None, "gpu"), or cpu_item's item plus the route taken."""
    try:
        data = Path(file).read_bytes()
    except OSError:
        return (*cpu_item(i, file, max_side), "unreadable")  # load_image says why (missing, directory, ...)
    facts = header_facts(data)
    way = route(facts)
    if way != "gpu":
        return (*cpu_item(i, file, max_side), way)
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # [N]
    return i, Encoded(encoded, facts["orientation"], file), None, way


# ---------------------------------------------------------------- on the device

def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """[C, H, W] as stored -> upright, for EXIF orientations 1..8 (PIL's ImageOps.exif_transpose)."""
    if orientation == 2:
        return image.flip(-1)  # FLIP_LEFT_RIGHT
    if orientation == 3:
        return image.flip(-2, -1)  # ROTATE_180
    if orientation == 4:
        return image.flip(-2)  # FLIP_TOP_BOTTOM
    if orientation == 5:
        return image.transpose(-2, -1)  # TRANSPOSE
    if orientation == 6:
        return image.transpose(-2, -1).flip(-1)  # ROTATE_270 (90 degrees clockwise)
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)  # TRANSVERSE
    if orientation == 8:
        return image.transpose(-2, -1).flip(-2)  # ROTATE_90 (counter-clockwise)
    return image


def shrink(image: torch.Tensor, max_side: int) -> tuple[torch.Tensor, float]:
    """uint8 [3, H, W] -> (long side <= max_side, scale) by load_image's size rule; antialiased bilinear."""
    h, w = image.shape[-2:]
    if max(h, w) <= max_side:
        return image.contiguous(), 1.0
    tw, th = target_size(w, h, max_side)
    small = F.interpolate(image[None].float(), size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    return small[0].round_().clamp_(0, 255).to(torch.uint8), max(w, h) / max(tw, th)


def decode_batch(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """One batched decode_jpeg of uint8 [N] tensors into RGB [3, H, W] on ``device``; a batch that fails
    is retried image by image, and an image that fails alone is None."""
    try:
        return list(decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        if len(encoded) == 1:
            return [None]
    return [decode_batch([e], device)[0] for e in encoded]


class BatchDecoder:
    """The hook after the DataLoader: a batch of worker items -> the crop step's items; counts each path.

    ``counts``: ``gpu`` (decoded on the device), ``cpu`` (load_image, in a worker or after nvJPEG refused),
    ``bad`` (skipped files), ``cpu_routes`` (why files took the CPU path on a GPU job, e.g. png, cmyk)."""

    def __init__(self, path: str, device: torch.device, max_side: int):
        self.path, self.device, self.max_side = path, device, max_side
        self.counts = {"gpu": 0, "cpu": 0, "bad": 0, "cpu_routes": Counter()}

    def __call__(self, batch: list) -> list:
        out: list = [None] * len(batch)  # in the loader's order
        pending = []
        for pos, item in enumerate(batch):
            if isinstance(item[1], Encoded):
                pending.append((pos, item))
                continue
            i, image, extra = item[:3]
            if len(item) == 4:
                self.counts["cpu_routes"][item[3]] += 1
            self._count(image)
            if image is not None and self.path == "gpu":
                image = image.to(self.device, non_blocking=True)  # one device per batch
            out[pos] = (i, image, extra)
        if pending:
            decoded = decode_batch([item[1].data for _, item in pending], self.device)
            for (pos, (i, enc, *_)), image in zip(pending, decoded, strict=True):
                if image is None:  # nvJPEG refused it: load_image decodes it or names the reason
                    self.counts["cpu_routes"]["refused"] += 1
                    i, image, extra = cpu_item(i, enc.file, self.max_side)
                    self._count(image)
                    out[pos] = (i, image if image is None else image.to(self.device), extra)
                    continue
                self.counts["gpu"] += 1
                out[pos] = (i, *shrink(orient(image, enc.orientation), self.max_side))
        return out

    def _count(self, image) -> None:
        self.counts["cpu" if image is not None else "bad"] += 1


# ---------------------------------------------------------------- which path runs

@functools.lru_cache(maxsize=None)
def nvjpeg_error(device: str) -> str | None:
    """None when decode_jpeg works on ``device`` (one tiny JPEG, probed once per device), else the error."""
    try:
        data = encode_jpeg(torch.full((3, 16, 24), 128, dtype=torch.uint8))
        out = decode_jpeg([data], mode=ImageReadMode.RGB, device=device)
        if tuple(out[0].shape) != (3, 16, 24):
            return f"decoded a 24x16 probe to shape {tuple(out[0].shape)}"
    except Exception as err:  # noqa: BLE001
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    return None


def resolve_decode(mode: str, device: torch.device, strategy: str, uses_backbone: bool) -> str:
    """``--decode auto | cpu | gpu`` -> the path that runs, "cpu" or "gpu".

    gpu needs a CUDA device where nvJPEG works and a strategy that runs phi on it (the others read pixels
    on the host); it fails with a one-line ValueError otherwise. auto is gpu where gpu would work, else cpu."""
    if mode not in DECODE_MODES:
        raise ValueError(f"--decode must be one of {', '.join(DECODE_MODES)}; got {mode!r}")
    if mode == "cpu":
        return "cpu"
    why = None
    if device.type != "cuda":
        seen = "" if torch.cuda.is_available() else " (torch sees no GPU)"
        why = f"needs a CUDA device (nvJPEG) but the job runs on {device}{seen}"
    elif not uses_backbone:
        why = f"decodes for strategies that run a backbone on the GPU; {strategy!r} reads its pixels on the host"
    elif (err := nvjpeg_error(str(device))) is not None:
        why = f"needs nvJPEG, which fails on {device} ({err})"
    if why is None:
        return "gpu"
    if mode == "gpu":
        raise ValueError(f"--decode gpu {why}; use --decode cpu or auto")
    return "cpu"
