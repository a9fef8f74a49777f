"""Field types for images and tensors inside step outputs: `Image` and `Array`.

Step outputs are pydantic models. A field typed `Image` or `Array` holds a
numpy array in Python, travels as a PNG data URI (images) or a nested list
(arrays) in JSON, and is written to the store as one compact blob (PNG or
npy) instead of a long JSON list. The store passes a blob sink through
pydantic's serialization context; everywhere else the JSON forms are used.

Images are canonicalised to uint8 on validation, so the PNG round trip is
lossless and a resumed run sees exactly the bytes an uninterrupted one did.
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
import zlib
from typing import Annotated, Any

import numpy as np
from pydantic import PlainSerializer, PlainValidator, SerializationInfo, ValidationInfo

BLOB_KEY = "$blob"
_DATA_URI = "data:image/png;base64,"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type
_CHANNELS = {v: k for k, v in _COLOR_TYPES.items()}


# --------------------------------------------------------------------- PNG codec
def encode_png(image: np.ndarray) -> bytes:
    """Encode a uint8 (H, W) or (H, W, C) array, C in 1-4, as an 8-bit PNG."""
    pixels = image if image.ndim == 3 else image[:, :, None]  # (H, W, C)
    height, width, channels = pixels.shape
    raw = np.zeros((height, 1 + width * channels), dtype=np.uint8)  # filter byte 0 per row
    raw[:, 1:] = pixels.reshape(height, width * channels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return (
        _PNG_MAGIC
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def decode_png(data: bytes) -> np.ndarray:
    """Decode a non-interlaced 8-bit PNG into (H, W) or (H, W, C) uint8."""
    if not data.startswith(_PNG_MAGIC):
        raise ValueError("not a PNG image")
    pos, idat, header = len(_PNG_MAGIC), b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    if header is None:
        raise ValueError("PNG has no IHDR chunk")
    width, height, depth, color, _, _, interlace = header
    if depth != 8 or interlace or color not in _CHANNELS:
        raise ValueError("only 8-bit, non-interlaced grey/RGB/RGBA PNGs are supported")
    channels = _CHANNELS[color]
    stride = width * channels
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        prev = out[y - 1] if y else np.zeros(stride, dtype=np.int32)
        if kind == 0:
            out[y] = line
        elif kind == 2:
            out[y] = (line + prev) & 0xFF
        else:  # Sub, Average and Paeth depend on the pixel to the left: decode bytewise
            cur = out[y]
            for x in range(stride):
                a = cur[x - channels] if x >= channels else 0
                b = prev[x]
                c = prev[x - channels] if x >= channels else 0
                if kind == 1:
                    pred = a
                elif kind == 3:
                    pred = (a + b) // 2
                elif kind == 4:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                else:
                    raise ValueError(f"bad PNG filter type {kind}")
                cur[x] = (line[x] + pred) & 0xFF
    pixels = out.astype(np.uint8).reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def png_data_uri(image: np.ndarray) -> str:
    return _DATA_URI + base64.b64encode(encode_png(image)).decode("ascii")


# ------------------------------------------------------------------ conversions
def _as_numpy(value: Any) -> np.ndarray:
    """Accept numpy arrays, torch tensors (without importing torch) and nested lists."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _resolve_ref(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, dict) and BLOB_KEY in value:
        blobs = (info.context or {}).get("blobs")
        if blobs is None or value[BLOB_KEY] not in blobs:
            raise ValueError(f"blob {value[BLOB_KEY]!r} is not available")
        return blobs[value[BLOB_KEY]]
    return value


def _to_image(value: Any, info: ValidationInfo) -> np.ndarray:
    value = _resolve_ref(value, info)
    if isinstance(value, str):
        if not value.startswith(_DATA_URI):
            raise ValueError("an image string must be a PNG data URI (data:image/png;base64,...)")
        return decode_png(base64.b64decode(value[len(_DATA_URI) :]))
    if isinstance(value, bytes):
        return decode_png(value)
    array = _as_numpy(value)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"an image must be (H, W), (H, W, 3|4) or (3|4, H, W); got {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError("an image must not contain NaN or infinity")
        if array.min() < -1e-3 or array.max() > 1 + 1e-3:
            raise ValueError("a float image must lie in [0, 1]")
        return np.rint(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8)
    if array.dtype.kind in "iub" and array.min() >= 0 and array.max() <= 255:
        return array.astype(np.uint8)
    raise ValueError(f"cannot read an image from dtype {array.dtype}")


def _to_array(value: Any, info: ValidationInfo) -> np.ndarray:
    value = _resolve_ref(value, info)
    if isinstance(value, bytes):
        return np.load(io.BytesIO(value), allow_pickle=False)
    array = _as_numpy(value)
    if array.dtype == object:
        raise ValueError("an array must be numeric, not ragged or of objects")
    return array


def _sink(info: SerializationInfo) -> dict[str, tuple[str, bytes]] | None:
    context = info.context
    return context.get("blob_sink") if isinstance(context, dict) else None


def _put(sink: dict[str, tuple[str, bytes]], kind: str, data: bytes) -> dict[str, str]:
    key = hashlib.blake2b(data, digest_size=16).hexdigest()
    sink[key] = (kind, data)
    return {BLOB_KEY: key}


def _image_out(value: np.ndarray, info: SerializationInfo) -> Any:
    if not info.mode_is_json():
        return value
    sink = _sink(info)
    if sink is not None:
        return _put(sink, "png", encode_png(value))
    return png_data_uri(value)


def _array_out(value: np.ndarray, info: SerializationInfo) -> Any:
    if not info.mode_is_json():
        return value
    sink = _sink(info)
    if sink is not None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(value), allow_pickle=False)
        return _put(sink, "npy", buffer.getvalue())
    return value.tolist()


Image = Annotated[
    np.ndarray,
    PlainValidator(_to_image, json_schema_input_type=str),
    PlainSerializer(_image_out),
]
"""A uint8 image (H, W) or (H, W, C); floats in [0, 1] and torch tensors are accepted."""

Array = Annotated[
    np.ndarray,
    PlainValidator(_to_array, json_schema_input_type=list),
    PlainSerializer(_array_out),
]
"""A numeric array of any shape and dtype, stored losslessly as npy."""


def decode_blob(kind: str, data: bytes) -> np.ndarray:
    """Turn a stored blob back into the array its field validator expects."""
    return decode_png(data) if kind == "png" else np.load(io.BytesIO(data), allow_pickle=False)
