"""Decoding image files and bytes into pixels in [0, 255].

All paths into the model go through :func:`decode_image_bytes` (training shards, catalogs, folders
of images, and the exported serving signature), so JPEG, PNG (8 or 16 bit, with or without alpha),
greyscale and colour images all arrive as float32 (H, W, 3) in [0, 255]. Scaling to [0, 1] happens
once, inside the model (:class:`zoobot_tf.models.GalaxyView`).

FITS files (astropy, the ``[fits]`` extra) are converted to 8-bit PNG bytes with an asinh stretch,
documented in :func:`fits_to_png_bytes`.
"""
from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")


def decode_image_bytes(encoded: tf.Tensor, load_size: int | None = None, channels: int = 3) -> tf.Tensor:
    """Encoded JPEG/PNG/BMP/GIF bytes (scalar tf.string) -> float32 (H, W, channels) in [0, 255].

    16-bit PNGs keep their precision (scaled to [0, 255]); alpha is dropped; greyscale is replicated
    to 3 channels. With ``load_size`` the image is resized (antialiased) to ``load_size`` square
    unless it already has that size.
    """
    # PNGs decode at 16 bits: libpng widens 8-bit data by 257 exactly, so dividing by 257 restores it exactly,
    # and 16-bit PNGs keep their precision. Every other format is 8-bit and decodes as uint8 (decode_image's
    # uint16 output would widen it by 256 - a JPEG's 255 would become 254.0 - and take twice as long).
    img = tf.cond(is_png(encoded),
                  lambda: tf.cast(tf.io.decode_png(encoded, channels=channels, dtype=tf.uint16), tf.float32) / 257.0,
                  lambda: tf.cast(tf.io.decode_image(encoded, channels=channels, expand_animations=False),
                                  tf.float32))
    if load_size is not None:
        img = resize_if_needed(img, load_size)
    return img


def is_png(encoded: tf.Tensor) -> tf.Tensor:
    """True when the bytes start with the PNG signature."""
    return tf.equal(tf.strings.substr(encoded, 0, 8), b"\x89PNG\r\n\x1a\n")


def resize_if_needed(img: tf.Tensor, size: int) -> tf.Tensor:
    """(H, W, C) -> (size, size, C), antialiased; untouched if already that size."""
    shape = tf.shape(img)
    same = tf.logical_and(shape[0] == size, shape[1] == size)
    out = tf.cond(same, lambda: img, lambda: tf.image.resize(img, (size, size), antialias=True))
    return tf.ensure_shape(out, [size, size, img.shape[-1]])


def is_fits(path: str | Path) -> bool:
    name = str(path).lower()
    return any(name.endswith(s) for s in FITS_SUFFIXES)


def without_image_suffix(path: str | Path) -> str:
    """``path`` without its image suffix, a compound one included (``a/b.fits.gz`` -> ``a/b``)."""
    name = str(path)
    for suffix in sorted(IMAGE_SUFFIXES + FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return str(Path(name).with_suffix(""))


def asinh_stretch(data: np.ndarray, q: float = 8.0, clip_percentile: float = 99.5) -> np.ndarray:
    """Scale survey flux to [0, 1]: subtract the median background, divide by the ``clip_percentile``
    level, then ``asinh(q * x) / asinh(q)`` (Lupton et al. 2004 style), clipped to [0, 1]."""
    data = np.asarray(data, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.all():  # masked (NaN) pixels as the background; saturated (+-inf) ones at the finite extremes
        if not finite.any():
            return np.zeros(data.shape)
        values = data[finite]
        data = np.where(np.isnan(data), np.median(values), np.clip(data, values.min(), values.max()))
    data = data - np.median(data)  # the background (saturated pixels count among the bright ones)
    scale = np.percentile(data, clip_percentile)
    if scale <= 0:
        scale = np.max(np.abs(data)) or 1.0
    return np.clip(np.arcsinh(q * data / scale) / np.arcsinh(q), 0.0, 1.0)


def fits_to_png_bytes(path: str | Path, hdu: int | None = None, q: float = 8.0) -> bytes:
    """Read a FITS image (2D, or 3D with bands first or last; leading axes of length 1 dropped) and return
    8-bit PNG bytes.

    The stretch (:func:`asinh_stretch`) is applied per band. One band gives a greyscale PNG; three or
    more bands give an RGB PNG from the first three, in the file's order as R, G, B (reorder the
    bands beforehand if your file stores them blue first). Needs astropy (``pip install zoobot-tf[fits]``).
    """
    try:
        from astropy.io import fits
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError("Reading FITS needs astropy: pip install 'zoobot-tf[fits]'") from e
    from PIL import Image

    with fits.open(path, memmap=False) as hdul:
        if hdu is None:
            hdu = next((i for i, h in enumerate(hdul) if getattr(h, "data", None) is not None), None)
            if hdu is None:
                raise ValueError(f"No image data in FITS file {path}")
        data = np.asarray(hdul[hdu].data, dtype=np.float64)
    while data.ndim > 3 and data.shape[0] == 1:  # e.g. (1, bands, y, x) from radio or IFU pipelines
        data = data[0]
    if data.ndim == 3:
        if data.shape[0] in (1, 3, 4) and data.shape[-1] not in (1, 3, 4):
            data = np.moveaxis(data, 0, -1)
        bands = [asinh_stretch(data[..., i], q) for i in range(data.shape[-1])]
        arr = np.stack(bands[:3], axis=-1) if len(bands) >= 3 else bands[0]
    elif data.ndim == 2:
        arr = asinh_stretch(data, q)
    else:
        raise ValueError(f"FITS image must be 2D or 3D. Received shape {data.shape} from {path}")
    img = Image.fromarray(np.round(arr * 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def read_image_file(path: str | Path) -> bytes:
    """Encoded bytes of an image file; FITS files are converted to PNG bytes."""
    if is_fits(path):
        return fits_to_png_bytes(path)
    return Path(path).read_bytes()


def _read_saying_why(path: bytes) -> bytes:
    """:func:`read_image_file` in a pipeline, which drops a file that fails (it is then listed as skipped):
    a file that exists but cannot be converted (a FITS cube, a corrupt file) is logged with the reason."""
    try:
        return read_image_file(path.decode())
    except FileNotFoundError:
        raise
    except Exception as e:
        logging.getLogger(__name__).warning("Cannot read %s (skipped): %s", path.decode(), e)
        raise


def why_unreadable(path: str | Path) -> str:
    """Why an image file cannot be used, in a few words, for the list of skipped galaxies (a file that reads
    now says so). Reads and decodes it as the pipelines do, once: call it only for the files a run skipped."""
    def first_line(e: Exception) -> str:  # without TensorFlow's "{{function_node ...}}" and "[Op:...]" wrapping
        text = (getattr(e, "message", None) or str(e) or type(e).__name__).strip().splitlines()[0]
        return re.sub(r"\s*\[Op:.*$", "", re.sub(r"\{\{.*?\}\}\s*", "", text))[:200]

    try:
        raw = read_image_file(path) if is_fits(path) else tf.io.read_file(str(path)).numpy()
    except (FileNotFoundError, tf.errors.NotFoundError):
        return "file not found"
    except Exception as e:  # a folder, no permission, a FITS file that does not convert...
        return f"cannot be read: {first_line(e)}"
    if not raw:
        return "empty file"
    try:
        decode_image_bytes(tf.constant(raw))
    except (tf.errors.OpError, ValueError) as e:
        return f"not a readable image: {first_line(e)}"
    return "could not be read during the run (it reads now)"


def bytes_reader(paths):
    """A TensorFlow function ``path -> encoded bytes`` for a tf.data map over ``paths``: the one place
    that reads image files in every pipeline (shards, catalogs, folders). Files go through TF's file
    systems (local, GCS, S3, HDFS) with ``tf.io.read_file``; if any path is a FITS file, every path is
    read in Python by :func:`read_image_file` instead (FITS -> PNG)."""
    if any(is_fits(p) for p in paths):
        def read(path):
            raw = tf.numpy_function(_read_saying_why, [path], tf.string, stateful=False)
            return tf.reshape(raw, [])
        return read
    return tf.io.read_file


def encode_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    """uint8 (H, W, C) -> JPEG bytes."""
    return tf.io.encode_jpeg(tf.convert_to_tensor(pixels, tf.uint8), quality=quality).numpy()
