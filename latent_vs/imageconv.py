"""sensor_msgs/Image fields <-> NumPy, with no ROS import (the nodes, the bag tools and the
tests build and read images through these two functions).

Every supported encoding becomes a uint8 grayscale array (H, W), the image type used
everywhere in latent_vs:
  * mono8            as is;
  * mono16 / 16UC1   scaled to 8 bit by v * 255 / 65535 (full range; a 12-bit camera that
                     leaves the top bits empty gives a dark image: rescale it in the driver);
  * rgb8, bgr8       ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) by OpenCV's
  * rgba8, bgra8     cvtColor (fixed point: within 1 grey level of the exact product);
                     the alpha channel is ignored.
Rows may be padded (step > width * bytes per pixel); the padding is dropped.
"""
from __future__ import annotations

import numpy as np

# encoding -> (channels, bytes per channel, channel order of R, G, B or None for grey)
_ENCODINGS: dict[str, tuple[int, int, tuple[int, int, int] | None]] = {
    "mono8": (1, 1, None),
    "8uc1": (1, 1, None),
    "mono16": (1, 2, None),
    "16uc1": (1, 2, None),
    "rgb8": (3, 1, (0, 1, 2)),
    "bgr8": (3, 1, (2, 1, 0)),
    "rgba8": (4, 1, (0, 1, 2)),
    "bgra8": (4, 1, (2, 1, 0)),
}
SUPPORTED_ENCODINGS = ("mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8")
# (channels, order) -> OpenCV conversion code (cv2.COLOR_RGB2GRAY etc.; numbers so that
# importing this module does not import cv2)
_CVT = {(3, (0, 1, 2)): 7, (3, (2, 1, 0)): 6, (4, (0, 1, 2)): 11, (4, (2, 1, 0)): 10}


def image_to_array(encoding: str, height: int, width: int, step: int, data, is_bigendian: bool = False) -> np.ndarray:
    """The fields of a sensor_msgs/Image -> uint8 grey (height, width).

    Raises ValueError with a message naming the problem on an unknown encoding, an empty
    image, or a data buffer that does not match height, width and step."""
    key = str(encoding).lower()
    if key not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, depth, order = _ENCODINGS[key]
    height, width, step = int(height), int(width), int(step)
    if height <= 0 or width <= 0:
        raise ValueError(f"empty image: {width}x{height} ({encoding})")
    row = width * channels * depth
    if step < row:
        raise ValueError(f"image step {step} is smaller than width x bytes per pixel = {row} ({width}x{height} {encoding})")
    buf = _as_bytes(data)
    if buf.size < step * (height - 1) + row or buf.size > step * height:
        raise ValueError(f"image data has {buf.size} bytes; {width}x{height} {encoding} with step {step} needs {step * height}")
    if buf.size < step * height:  # last row without padding
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    rows = buf.reshape(height, step)[:, :row]
    if depth == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        grey16 = np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.float32)
        return np.clip(np.rint(grey16 * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    px = rows.reshape(height, width, channels)
    if order is None:
        return np.ascontiguousarray(px[:, :, 0])
    import cv2  # fixed-point BT.601 luma: 7x faster than the float product (docs/ros.md)
    return cv2.cvtColor(np.ascontiguousarray(px), _CVT[(channels, order)])


def _as_bytes(data) -> np.ndarray:
    """bytes, bytearray, array.array('B') (rclpy), memoryview, list or ndarray -> flat uint8."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).ravel()
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).ravel()


def array_to_fields(img: np.ndarray) -> dict:
    """uint8 grey (H, W) -> the fields of a mono8 sensor_msgs/Image (encoding, height, width,
    step, is_bigendian, data as bytes); set them on a message with `setattr`."""
    img = np.asarray(img)
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(f"expected a uint8 grey image (H, W), got {img.dtype} {img.shape}")
    h, w = img.shape
    return {"encoding": "mono8", "height": h, "width": w, "step": w, "is_bigendian": 0,
            "data": np.ascontiguousarray(img).tobytes()}


def array_to_fields_as(img: np.ndarray, encoding: str) -> dict:
    """A uint8 grey (H, W) image written in another encoding (mono8, mono16, rgb8, bgr8,
    rgba8, bgra8): for tests and the latency benchmark, which feed the encoder every format."""
    f = array_to_fields(img)
    key = encoding.lower()
    if key not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding '{encoding}' (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, depth, _ = _ENCODINGS[key]
    h, w = img.shape
    if depth == 2:
        data = (img.astype("<u2") * 257).tobytes()
    elif channels == 1:
        data = f["data"]
    else:
        px = np.repeat(img[:, :, None], channels, axis=2)
        if channels == 4:
            px[:, :, 3] = 255
        data = np.ascontiguousarray(px).tobytes()
    return {"encoding": encoding, "height": h, "width": w, "step": w * channels * depth, "is_bigendian": 0, "data": data}


def fit_image(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Centre-crop a grey image (H, W) to the aspect ratio width:height, then resize it to
    (height, width) (area interpolation when shrinking). The same field-of-view rule as a
    model's input: the camera's principal point is assumed near the image centre."""
    import cv2
    h, w = img.shape
    if (w, h) == (width, height):
        return img
    if w * height > h * width:       # too wide: crop columns
        cw, ch = int(round(h * width / height)), h
    else:                            # too tall: crop rows
        cw, ch = w, int(round(w * height / width))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    crop = img[y0:y0 + ch, x0:x0 + cw]
    interp = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
    return cv2.resize(crop, (width, height), interpolation=interp)


def read_grey_image(path: str) -> np.ndarray:
    """An image file (PNG, JPEG, ...; grey, colour or 16 bit) -> uint8 grey (H, W), converted
    as image_to_array would. Raises ValueError naming the file when it cannot be read."""
    import os

    import cv2
    if not os.path.isfile(path):
        raise ValueError(f"image file not found: {path}")
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f"not a readable image file: {path}")
    if img.dtype == np.uint16:
        img = np.clip(np.rint(img.astype(np.float32) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f"unsupported pixel type {img.dtype} in {path}")
    if img.ndim == 3:  # OpenCV stores colour as BGR(A); the same luma as image_to_array
        img = cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_BGR2GRAY)
    return img
