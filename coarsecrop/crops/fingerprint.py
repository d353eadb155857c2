"""Fingerprints of a crop job's inputs, recorded in its configuration (``job.job_config``): a job whose
inputs changed between its start and its resume is a different job, refused rather than mixed.

- ``scene_list_sha256``: the image list (ids and files relative to the root), every job;
- ``annotations_sha256``: the annotated sizes, boxes and labels, for the strategies that crop from them
  (``needs_annotations``: gt, gtpad, poor);
- ``masks_sha256``: the instance, crowd and void masks, for the strategies that read them (``needs_masks``:
  poor). A mask is described by what its lazy decoder reads: the segmentations it holds (COCO polygons and
  RLE), the bytes of its arrays (the boxes) and the content (sha256) of any file it opens (VOC's
  SegmentationObject png), so nothing is decoded and the text does not depend on print options.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import numpy as np
import torch

from coarsecrop.io import file_sha256


def relative_file(file: str, root: str) -> str:
    """Path of ``file`` relative to the scene set root, with forward slashes."""
    return Path(os.path.relpath(os.path.abspath(file), os.path.abspath(root))).as_posix()


def scene_list_sha256(scenes: list, root: str) -> str:
    """Fingerprint of the image list: a data set that gained or lost images is a different job."""
    h = hashlib.sha256()
    for s in scenes:
        h.update(f"{s.id}\t{relative_file(s.file, root)}\n".encode())
    return h.hexdigest()


def annotations_sha256(scenes: list) -> str:
    """Fingerprint of the annotations the ``gt`` family crops from: each scene's annotated size, boxes and
    labels (the masks: ``masks_sha256``). An annotation file edited between a job's start and its resume
    is then a different job."""
    h = hashlib.sha256()
    for s in scenes:
        h.update(f"{s.id}\t{s.width}\t{s.height}\t{len(s.boxes)}\n".encode())
        h.update(np.ascontiguousarray(s.boxes.numpy(), dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(s.labels.numpy(), dtype=np.int64).tobytes())
    return h.hexdigest()


def _argument_text(value, files: dict) -> str:
    """A decoder argument as text that depends on its value only: a file by its content's sha256 (read once
    per ``files``, the cache of one fingerprint: VOC's instance and void decoders open the same png), an
    array or tensor by its dtype, shape and bytes (their repr rounds and elides, and follows the print
    options a notebook may have set), anything else (the segmentations: lists, dicts, numbers) by its repr."""
    if isinstance(value, str) and os.path.isfile(value):
        if value not in files:
            files[value] = file_sha256(value)
        return f"sha256:{files[value]}"
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return f"array({data.dtype},{data.shape}):{hashlib.sha256(data.tobytes()).hexdigest()}"
    return repr(value)


def _decoder_source(decoder, files: dict) -> str:
    """What a scene's lazy mask decoder reads, as text: None, or the function's name and its arguments
    (``_argument_text``)."""
    if decoder is None:
        return "-"
    if not isinstance(decoder, partial):
        raise TypeError(f"a mask decoder that is not a functools.partial cannot be fingerprinted: {decoder!r}")
    args = [_argument_text(a, files) for a in decoder.args]
    keywords = [f"{k}={_argument_text(v, files)}" for k, v in sorted(decoder.keywords.items())]
    return f"{decoder.func.__name__}({', '.join(args + keywords)})"


def masks_sha256(scenes: list) -> str:
    """Fingerprint of each scene's instance, crowd and void masks, by what their decoders read (module
    docstring): a segmentation edited between a Poor-Crop job's start and its resume is a different job."""
    h, files = hashlib.sha256(), {}
    for s in scenes:
        sources = [_decoder_source(d, files) for d in (s.mask_decoder, s.crowd_decoder, s.void_decoder)]
        h.update(("\t".join([str(s.id), *sources]) + "\n").encode())
    return h.hexdigest()
