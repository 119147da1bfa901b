"""Kernel objects as v2 ``image_url`` content blocks.

`image_block(obj)` turns what a notebook holds into
``{"type": "image_url", "image_url": {"url": ..., "detail"?: ...}}``:

* a matplotlib ``Figure`` or ``Axes`` (the whole figure, at its own size and dpi) -> PNG;
* a PIL image -> PNG (JPEG when it was read from a JPEG);
* a numpy array H×W, H×W×1, H×W×3 or H×W×4 (uint8, bool, uint16, other integers within
  0-255, floats within [0, 1]) -> PNG, encoded here with zlib (no PIL needed);
* ``IPython.display.Image``, raw PNG/JPEG/GIF/WebP bytes (type sniffed from the bytes) or a
  local file path -> a ``data:`` URI of those bytes, unchanged;
* an ``http(s)://`` URL or a ``data:image/...`` URI -> passed through unchanged.

Cohere's limits (`MAX_IMAGES` images and `MAX_BYTES` of image data per request) are checked
by `check_limits`. matplotlib, PIL and numpy are never imported here: an object of their types
exists only if its module is already loaded, so ``sys.modules`` is where they are looked up.
"""

from __future__ import annotations

from typing import Any

from .errors import ValidationError
from .imageconvert import ACCEPTED, MAX_BYTES, to_url
from .imageformat import data_size, decode_data_uri, human_size, sniff

__all__ = [
    "DETAILS",
    "MAX_IMAGES",
    "MAX_BYTES",
    "ACCEPTED",
    "image_block",
    "image_blocks",
    "check_limits",
    "count_images",
    "image_info",
    "placeholder",
    "PLACEHOLDER_PREFIX",
    "thumbnail",
    "strip_images",
    "sniff",
]

DETAILS = ("auto", "low", "high")
PLACEHOLDER_PREFIX = "[image"
MAX_IMAGES = 20  # Cohere: at most 20 images per request


# -- public API ---------------------------------------------------------------------------------
def image_block(
    obj: Any,
    detail: str | None = None,
    *,
    field: str = "image",
    detail_field: str = "image_detail",
) -> dict[str, Any]:
    """One ``image_url`` content block for `obj`.

    `field` and `detail_field` name the argument (or flag) in errors; `detail` None leaves
    the choice to the API (its default is ``auto``).
    """
    if detail is not None and detail not in DETAILS:
        raise ValidationError(detail_field, detail, "one of " + ", ".join(DETAILS))
    image: dict[str, Any] = {"url": to_url(obj, field)}
    if detail is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def image_blocks(
    images: Any,
    detail: str | None = None,
    *,
    field: str = "images",
    detail_field: str = "image_detail",
    already: int = 0,
) -> list[dict[str, Any]]:
    """Blocks for a list of images (a single object is a list of one), limits checked.

    `already` is the image blocks the request holds besides these (the history's), so the
    per-request count limit covers them too.
    """
    if images is None:
        return []
    if isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    blocks = [
        image_block(o, detail, field=f"{field}[{i}]", detail_field=detail_field)
        for i, o in enumerate(items)
    ]
    check_limits(blocks, field=field, already=already)
    return blocks


def count_images(messages: list[Any]) -> list[dict[str, Any]]:
    """Every ``image_url`` block in a message list (what a request would send)."""
    out = []
    for msg in messages or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            out.extend(b for b in content if isinstance(b, dict) and b.get("type") == "image_url")
    return out


def check_limits(blocks: list[dict[str, Any]], *, field: str = "images", already: int = 0) -> None:
    """Raise a ValidationError naming `field` when the blocks break Cohere's per-request limits.

    Pass every image of the request (`count_images(messages)` plus the new ones): the limits
    hold for the whole request, history included. URL images count, but their bytes are
    unknown here (Cohere fetches them), so only ``data:`` URIs add to the size.
    """
    n = len(blocks) + already
    if n > MAX_IMAGES:
        raise ValidationError(
            field,
            n,
            f"at most {MAX_IMAGES} images per request",
            message=f"{field}: {n} images in one request; "
            f"Cohere accepts at most {MAX_IMAGES} images per request",
        )
    total = sum(data_size(b.get("image_url", {}).get("url", "")) for b in blocks)
    if total > MAX_BYTES:
        raise ValidationError(
            field,
            total,
            f"at most {MAX_BYTES // 1000000} MB of images per request",
            message=f"{field}: {human_size(total)} of images in one request; "
            f"Cohere accepts at most {MAX_BYTES // 1000000} MB per request",
        )


def image_info(block_or_url: Any) -> dict[str, Any]:
    """``{"url"?, "format", "width", "height", "bytes"}`` of a block or URL, from its header only.

    For an http(s) URL only ``url`` is known; unknown numbers are None.
    """
    url = block_or_url
    if isinstance(url, dict):
        url = (url.get("image_url") or {}).get("url", "") if "image_url" in url else url.get("url")
    info: dict[str, Any] = {"format": None, "width": None, "height": None, "bytes": None}
    if not isinstance(url, str):
        return info
    if not url.startswith("data:"):
        info["url"] = url
        return info
    data = decode_data_uri(url)
    if data is None:
        return info
    fmt, w, h = sniff(data)
    info.update(format=fmt, width=w, height=h, bytes=len(data))
    return info


def placeholder(block_or_url: Any) -> str:
    """A short stand-in for exports: ``[image 640×480 png 48 KB]`` (or ``[image <url>]``)."""
    info = image_info(block_or_url)
    if "url" in info:
        return f"[image {info['url']}]"
    parts = []
    if info["width"] and info["height"]:
        parts.append(f"{info['width']}×{info['height']}")
    if info["format"]:
        parts.append(info["format"])
    if info["bytes"] is not None:
        parts.append(human_size(info["bytes"]))
    return "[image " + " ".join(parts) + "]" if parts else "[image]"


def thumbnail(block_or_url: Any, max_px: int = 160) -> str | None:
    """A small ``data:`` URI showing the image, made from the kernel's own copy.

    None for an http(s) image: the view must not fetch it (it shows `placeholder` instead).
    Small images are shown as they are; larger ones are scaled down with PIL when it is
    installed, else shown as they are up to 512 KB (None beyond).
    """
    info = image_info(block_or_url)
    if "url" in info or info["bytes"] is None:
        return None
    url = block_or_url
    if isinstance(url, dict):
        url = (url.get("image_url") or {}).get("url")
    w, h = info["width"] or 0, info["height"] or 0
    if 0 < w <= max_px and 0 < h <= max_px and info["bytes"] <= 64 * 1024:
        return url
    try:
        import io

        from PIL import Image
    except ImportError:
        return url if info["bytes"] <= 512 * 1024 else None
    img = Image.open(io.BytesIO(decode_data_uri(url) or b""))
    img.thumbnail((max_px, max_px))
    if img.mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA")
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    import base64

    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def strip_images(message: dict[str, Any]) -> dict[str, Any]:
    """A copy of `message` whose ``data:`` image URLs are replaced by `placeholder` text.

    For tables and logs (megabytes of base64 help nobody there); the JSON export keeps the
    real blocks. A stripped block cannot be sent again: its url is not a URL.
    """
    content = message.get("content")
    if not isinstance(content, list):
        return dict(message)
    blocks = []
    for b in content:
        url = (b.get("image_url") or {}).get("url") if isinstance(b, dict) else None
        if isinstance(url, str) and url.startswith("data:"):
            b = {**b, "image_url": {**b["image_url"], "url": placeholder(url)}}
        blocks.append(b)
    return {**message, "content": blocks}
