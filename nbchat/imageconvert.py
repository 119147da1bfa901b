"""Kernel objects -> image bytes -> ``data:`` URIs (the conversions behind `nbchat.images`).

matplotlib, PIL, numpy and IPython are never imported here: an object of their types exists
only if its module is already loaded, so ``sys.modules`` is where their classes are looked up.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import sys
from typing import Any

from .errors import ValidationError
from .imageformat import MIMES, decode_data_uri, encode_png, sniff

__all__ = ["to_url", "ACCEPTED", "MAX_BYTES"]

MAX_BYTES = 20 * 1000 * 1000  # Cohere: at most 20 MB of images per request (decoded bytes)
ACCEPTED = (
    "a matplotlib Figure or Axes, a PIL image, a numpy array (H×W, H×W×3 or H×W×4), "
    "IPython.display.Image, PNG/JPEG/GIF/WebP bytes, a local file path or an http(s) URL"
)


def to_url(obj: Any, field: str) -> str:
    """A URL for `obj`: http(s) and data: URIs unchanged, everything else as a data: URI."""
    if isinstance(obj, str):
        return _from_string(obj, field)
    if isinstance(obj, os.PathLike):
        return _from_path(os.fspath(obj), field)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(obj), field)
    for check, convert in _CONVERTERS:
        if check(obj):
            return convert(obj, field)
    for method, fmt in (("_repr_png_", "png"), ("_repr_jpeg_", "jpeg")):
        data = _call_repr(obj, method)
        if data is not None:
            return _from_bytes(data, field, expect=fmt)
    kind = type(obj)
    raise ValidationError(
        field,
        f"{kind.__module__}.{kind.__qualname__}",
        ACCEPTED,
        message=f"{field}: cannot send an object of type {kind.__module__}.{kind.__qualname__}"
        f" as an image; accepted: {ACCEPTED}",
    )


def _from_string(s: str, field: str) -> str:
    low = s[:16].lower()
    if low.startswith(("http://", "https://")):
        return s
    if low.startswith("data:"):
        if not low.startswith("data:image/") or decode_data_uri(s) is None:
            raise ValidationError(field, s, "a base64 data:image/... URI")
        return s
    return _from_path(s, field)


def _from_path(path: str, field: str) -> str:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ValidationError(
            field,
            path,
            ACCEPTED,
            message=f"{field}: cannot read image file {path!r} ({exc.strerror or exc}); "
            f"accepted: {ACCEPTED}",
        ) from None
    return _from_bytes(data, field, source=path)


def _from_bytes(data: bytes, field: str, *, source: str = "", expect: str = "") -> str:
    fmt, _, _ = sniff(data)
    if fmt is None:
        what = f"file {source!r}" if source else f"{len(data)} bytes"
        raise ValidationError(
            field,
            data[:16],
            "PNG, JPEG, GIF or WebP data",
            message=f"{field}: {what} {'is' if source else 'are'} not a PNG, JPEG, GIF or WebP"
            f" image" + (f" (expected {expect})" if expect else ""),
        )
    if len(data) > MAX_BYTES:
        raise ValidationError(
            field,
            len(data),
            f"at most {MAX_BYTES // 1000000} MB of images per request",
            message=f"{field}: image larger than {MAX_BYTES // 1000000} MB; "
            f"Cohere accepts at most {MAX_BYTES // 1000000} MB of images per request",
        )
    return f"data:{MIMES[fmt]};base64," + base64.b64encode(data).decode("ascii")


def _call_repr(obj: Any, method: str) -> bytes | None:
    fn = getattr(type(obj), method, None)
    if fn is None:
        return None
    data = fn(obj)
    if isinstance(data, tuple):  # (data, metadata)
        data = data[0]
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError):
            return None
    return bytes(data) if isinstance(data, (bytes, bytearray)) else None


def _module_type(module: str, name: str) -> type | None:
    mod = sys.modules.get(module)
    kind = getattr(mod, name, None) if mod is not None else None
    return kind if isinstance(kind, type) else None


def _is_figure(obj: Any) -> bool:
    kinds = [
        _module_type("matplotlib.figure", "FigureBase"),
        _module_type("matplotlib.axes", "Axes"),
    ]
    return any(k is not None and isinstance(obj, k) for k in kinds)


def _figure_png(obj: Any, field: str) -> str:
    while not hasattr(obj, "savefig"):  # Axes -> (Sub)Figure -> Figure
        obj = obj.figure
    buf = io.BytesIO()
    obj.savefig(buf, format="png")  # the figure's own size and dpi: what the user sees
    return _from_bytes(buf.getvalue(), field)


def _is_pil(obj: Any) -> bool:
    kind = _module_type("PIL.Image", "Image")
    return kind is not None and isinstance(obj, kind)


def _pil_data(img: Any, field: str) -> str:
    buf = io.BytesIO()
    if getattr(img, "format", None) == "JPEG" and img.mode in ("RGB", "L"):
        img.save(buf, format="JPEG", quality=95)
    else:
        if img.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
            img = img.convert("RGBA" if "A" in img.mode else "RGB")
        img.save(buf, format="PNG")
    return _from_bytes(buf.getvalue(), field)


def _is_ipython_image(obj: Any) -> bool:
    kind = _module_type("IPython.display", "Image") or _module_type("IPython.core.display", "Image")
    return kind is not None and isinstance(obj, kind)


def _ipython_image(obj: Any, field: str) -> str:
    if obj.data is not None:
        return _from_bytes(bytes(obj.data), field)
    url = getattr(obj, "url", None)
    if isinstance(url, str) and url:
        return _from_string(url, field)
    filename = getattr(obj, "filename", None)
    if isinstance(filename, str) and filename:
        return _from_path(filename, field)
    raise ValidationError(field, obj, "an IPython.display.Image with data, a url or a filename")


def _is_array(obj: Any) -> bool:
    kind = _module_type("numpy", "ndarray")
    return kind is not None and isinstance(obj, kind)


def _array_png(arr: Any, field: str) -> str:
    np = sys.modules["numpy"]
    if arr.dtype == object and arr.size and all(_is_figure(a) for a in arr.flat):
        return _figure_png(arr.flat[0], field)  # plt.subplots(2, 2)[1]: the figure of the axes
    shape = arr.shape
    if arr.ndim == 3 and shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
        raise ValidationError(
            field, f"array of shape {shape}", "a non-empty H×W, H×W×3 or H×W×4 array"
        )
    arr = _to_uint8(np, arr, field)
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    rows = np.ascontiguousarray(arr).reshape(h, w * channels)
    # each PNG row starts with its filter type (0 = none)
    raw = np.concatenate([np.zeros((h, 1), dtype=np.uint8), rows], axis=1).tobytes()
    return _from_bytes(encode_png(raw, w, h, channels), field)


def _to_uint8(np: Any, arr: Any, field: str) -> Any:
    kind = arr.dtype.kind
    if kind == "b":
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)
    if kind in "iu":
        if arr.min() >= 0 and arr.max() <= 255:
            return arr.astype(np.uint8)
        allowed = "integer values within 0-255 (or a uint8/uint16 array)"
    elif kind == "f":
        if np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1:
            return np.round(arr * 255).astype(np.uint8)
        allowed = "float values within [0, 1] (or a uint8 array, e.g. arr.astype('uint8'))"
    else:
        allowed = "a bool, integer or float array"
    if kind in "iuf":
        lo, hi = arr.min().item(), arr.max().item()
        found = f"{arr.dtype} array with values {lo!r}..{hi!r}"
    else:
        found = f"{arr.dtype} array"
    raise ValidationError(field, found, allowed, message=f"{field}: {found}; allowed: {allowed}")


_CONVERTERS = (
    (_is_figure, _figure_png),
    (_is_pil, _pil_data),
    (_is_ipython_image, _ipython_image),
    (_is_array, _array_png),
)
