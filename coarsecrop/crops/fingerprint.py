"""Fingerprints of a crop job's inputs, recorded in its configuration (``job.job_config``): a job whose
inputs changed between its start and its resume is a different job, refused rather than mixed.

- ``scene_list_sha256``: the image list (ids and files relative to the root), every job;
- ``annotations_sha256``: the annotated sizes, boxes and labels, for the strategies that crop from them
  (``needs_annotations``: gt, gtpad, poor);
- ``masks_sha256``: the instance, crowd and void masks, for the strategies that read them (``needs_masks``:
  poor). A mask is described by what its lazy decoder reads: the segmentations it holds (COCO polygons and
  RLE) and the content (sha256) of any file it opens (VOC's SegmentationObject png), so nothing is decoded.
"""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import numpy as np

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


def _decoder_source(decoder) -> str:
    """What a scene's lazy mask decoder reads, as text: None, or the function's name and its arguments,
    a file argument by its content's sha256."""
    if decoder is None:
        return "-"
    if not isinstance(decoder, partial):
        raise TypeError(f"a mask decoder that is not a functools.partial cannot be fingerprinted: {decoder!r}")
    args = [f"sha256:{file_sha256(a)}" if isinstance(a, str) and os.path.isfile(a) else repr(a)
            for a in decoder.args]
    return f"{decoder.func.__name__}({', '.join(args)}, {sorted(decoder.keywords.items())!r})"


def masks_sha256(scenes: list) -> str:
    """Fingerprint of each scene's instance, crowd and void masks, by what their decoders read (module
    docstring): a segmentation edited between a Poor-Crop job's start and its resume is a different job."""
    h = hashlib.sha256()
    for s in scenes:
        h.update(f"{s.id}\t{_decoder_source(s.mask_decoder)}\t{_decoder_source(s.crowd_decoder)}\t"
                 f"{_decoder_source(s.void_decoder)}\n".encode())
    return h.hexdigest()
