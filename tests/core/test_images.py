"""Kernel objects -> v2 image_url blocks: the recorded vision requests, real encoders, limits."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from fixtures_util import load
from PIL import Image

from nbchat.errors import ValidationError
from nbchat.images import (
    ACCEPTED,
    MAX_BYTES,
    MAX_IMAGES,
    check_limits,
    count_images,
    image_block,
    image_blocks,
    image_info,
    placeholder,
    strip_images,
    thumbnail,
)
from nbchat.protocol import validate_request

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _decode(block: dict) -> tuple[str, Image.Image]:
    """The mime type and the PIL image a data-URI block holds (decoded by PIL, not by us)."""
    url = block["image_url"]["url"]
    head, _, payload = url.partition(",")
    assert head.startswith("data:") and head.endswith(";base64"), head
    data = base64.b64decode(payload, validate=True)
    img = Image.open(io.BytesIO(data))
    img.load()
    return head[5:-7], img


def _request(fixture: dict, blocks: list[dict]) -> dict:
    user = fixture["messages"][0]
    text = [b for b in user["content"] if b["type"] == "text"]
    return {
        "model": fixture["model"],
        "messages": [{"role": "user", "content": [*text, *blocks]}],
        "stream": False,
    }


# -- the recorded vision requests ------------------------------------------------------------------
def test_base64_request_equals_recording_from_bytes_path_and_ipython_image(tmp_path):
    rec = load("lc_vision_base64", ".request.json")
    url = rec["messages"][0]["content"][1]["image_url"]["url"]
    png = base64.b64decode(url.partition(",")[2])
    path = tmp_path / "pixel.png"
    path.write_bytes(png)
    from IPython.display import Image as IPyImage

    for source in (png, bytearray(png), str(path), path, IPyImage(data=png), IPyImage(str(path))):
        req = _request(rec, image_blocks([source], detail="high"))
        assert req == rec, type(source)
        assert validate_request(req) == rec


def test_url_request_equals_recording():
    rec = load("lc_vision_url", ".request.json")
    url = rec["messages"][0]["content"][1]["image_url"]["url"]
    assert _request(rec, image_blocks(url)) == rec
    assert _request(rec, [image_block(url)]) == rec


def test_multiple_images_request_equals_recording():
    rec = load("lc_vision_multiple_images", ".request.json")
    url = "https://cohere.com/favicon-32x32.png"
    req = _request(rec, [image_block(url), image_block(url, "low")])
    assert req == rec
    assert validate_request(req) == rec


# -- kernel objects become PNG data URIs of the right size ----------------------------------------
def test_matplotlib_figure_and_axes_are_png_of_the_figure_size():
    fig, axes = plt.subplots(1, 2, figsize=(4, 3), dpi=50)
    axes[0].plot([0, 1, 4, 9])
    try:
        for obj in (fig, axes[0], axes[1], axes):
            mime, img = _decode(image_block(obj))
            assert mime == "image/png"
            assert img.size == (200, 150)
    finally:
        plt.close(fig)


def test_pil_image_is_png_with_its_pixels():
    src = Image.new("RGB", (64, 32), (200, 10, 30))
    src.putpixel((5, 7), (1, 2, 3))
    mime, img = _decode(image_block(src))
    assert mime == "image/png" and img.size == (64, 32)
    assert img.convert("RGB").getpixel((5, 7)) == (1, 2, 3)
    assert img.convert("RGB").getpixel((0, 0)) == (200, 10, 30)
    # modes PNG cannot hold are converted, not refused
    mime, img = _decode(image_block(Image.new("CMYK", (8, 4))))
    assert mime == "image/png" and img.size == (8, 4)


def test_pil_image_read_from_jpeg_stays_jpeg():
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (0, 128, 255)).save(buf, format="JPEG")
    src = Image.open(io.BytesIO(buf.getvalue()))
    mime, img = _decode(image_block(src))
    assert mime == "image/jpeg" and img.size == (40, 30)


@pytest.mark.parametrize(
    "arr",
    [
        np.arange(12 * 7, dtype=np.uint8).reshape(12, 7),
        np.random.default_rng(0).integers(0, 256, (12, 7, 3), dtype=np.uint8),
        np.random.default_rng(1).integers(0, 256, (12, 7, 4), dtype=np.uint8),
        np.random.default_rng(2).integers(0, 256, (12, 7, 1), dtype=np.uint8),
    ],
    ids=["HxW", "HxWx3", "HxWx4", "HxWx1"],
)
def test_numpy_array_is_png_that_decodes_to_the_same_pixels(arr):
    mime, img = _decode(image_block(arr))
    assert mime == "image/png"
    assert img.size == (7, 12)  # PIL: (width, height)
    assert img.mode == {2: "L", 1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2] if arr.ndim == 3 else 2]
    assert np.array_equal(
        np.asarray(img), arr.squeeze(axis=2) if arr.ndim == 3 and arr.shape[2] == 1 else arr
    )


def test_numpy_dtypes():
    floats = np.linspace(0, 1, 20).reshape(4, 5)
    _, img = _decode(image_block(floats))
    assert np.array_equal(np.asarray(img), np.round(floats * 255).astype(np.uint8))
    mask = np.eye(3, dtype=bool)
    assert np.array_equal(np.asarray(_decode(image_block(mask))[1]), mask * 255)
    wide = np.full((2, 2), 65535, dtype=np.uint16)
    assert np.asarray(_decode(image_block(wide))[1]).tolist() == [[255, 255], [255, 255]]
    small_ints = np.array([[0, 255], [7, 9]], dtype=np.int64)
    assert np.asarray(_decode(image_block(small_ints))[1]).tolist() == [[0, 255], [7, 9]]


@pytest.mark.parametrize(
    ("arr", "needle"),
    [
        (np.full((2, 2), 2.5), "[0, 1]"),
        (np.array([[np.nan, 0.0]]), "[0, 1]"),
        (np.array([[-1, 300]], dtype=np.int32), "0-255"),
        (np.zeros((2, 2, 2), dtype=np.uint8), "(2, 2, 2)"),
        (np.zeros((0, 4), dtype=np.uint8), "(0, 4)"),
        (np.zeros((2, 2, 2, 2), dtype=np.uint8), "H×W"),
        (np.array([["a"]]), "bool, integer or float"),
    ],
)
def test_numpy_arrays_that_are_not_images_are_refused(arr, needle):
    with pytest.raises(ValidationError) as err:
        image_blocks([arr], field="--image")
    assert err.value.field == "--image[0]"
    assert needle in str(err.value)


# -- bytes, paths, URLs ------------------------------------------------------------------------------
def test_jpeg_bytes_are_sniffed_and_kept_as_they_are():
    buf = io.BytesIO()
    Image.new("RGB", (33, 21), (5, 5, 5)).save(buf, format="JPEG")
    block = image_block(buf.getvalue())
    assert block["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert base64.b64decode(block["image_url"]["url"].partition(",")[2]) == buf.getvalue()
    info = image_info(block)
    assert (info["format"], info["width"], info["height"]) == ("jpeg", 33, 21)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_gif_and_webp_are_sniffed(fmt):
    buf = io.BytesIO()
    Image.new("RGB", (19, 11), (5, 6, 7)).save(buf, format=fmt)
    block = image_block(buf.getvalue())
    info = image_info(block)
    assert (info["format"], info["width"], info["height"]) == (fmt.lower(), 19, 11)


def test_urls_and_data_uris_pass_through_unchanged():
    for url in (
        "https://example.org/a.png?x=1",
        "http://h/i.jpg",
        "data:image/png;base64,iVBORw0KGgo=",
    ):
        assert image_block(url) == {"type": "image_url", "image_url": {"url": url}}


def test_bad_sources_name_the_argument(tmp_path):
    with pytest.raises(ValidationError) as err:
        image_block(b"not an image at all", field="images[3]")
    assert err.value.field == "images[3]" and "not a PNG, JPEG" in str(err.value)
    with pytest.raises(ValidationError) as err:
        image_block(str(tmp_path / "missing.png"), field="--image")
    assert err.value.field == "--image" and "missing.png" in str(err.value)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValidationError, match="notes.txt.*not a PNG"):
        image_block(text)
    with pytest.raises(ValidationError) as err:
        image_block("data:text/plain;base64,aGk=")
    assert err.value.field == "image"


def test_unsupported_type_names_its_type_and_what_is_accepted():
    import collections

    with pytest.raises(ValidationError) as err:
        image_blocks([collections.OrderedDict()], field="images")
    msg = str(err.value)
    assert err.value.field == "images[0]"
    assert "collections.OrderedDict" in msg
    assert ACCEPTED in msg and "matplotlib Figure" in msg and "numpy array" in msg
    with pytest.raises(ValidationError, match="builtins.int"):
        image_block(42)


def test_objects_with_a_png_repr_are_accepted():
    png = base64.b64decode(
        load("lc_vision_base64", ".request.json")["messages"][0]["content"][1]["image_url"][
            "url"
        ].partition(",")[2]
    )

    class Chart:
        def _repr_png_(self):
            return png

    class EncodedChart:
        def _repr_png_(self):
            return base64.b64encode(png).decode(), {"width": 1}

    for obj in (Chart(), EncodedChart()):
        assert image_info(image_block(obj))["format"] == "png"


def test_detail_values():
    url = "https://example.org/a.png"
    for detail in ("auto", "low", "high"):
        assert image_block(url, detail)["image_url"]["detail"] == detail
    with pytest.raises(ValidationError) as err:
        image_blocks([url], detail="medium", detail_field="--image-detail")
    assert err.value.field == "--image-detail"
    assert "auto, low, high" in str(err.value)


# -- Cohere's per-request limits ---------------------------------------------------------------------
def test_more_than_20_images_refused_naming_the_argument_and_limit():
    urls = [f"https://example.org/{i}.png" for i in range(MAX_IMAGES)]
    assert len(image_blocks(urls)) == MAX_IMAGES
    with pytest.raises(ValidationError) as err:
        image_blocks([*urls, urls[0]], field="--image")
    assert err.value.field == "--image"
    assert "21 images" in str(err.value) and "at most 20" in str(err.value)
    # the history's images count too
    with pytest.raises(ValidationError, match="at most 20"):
        image_blocks(urls[:2], already=19)


def test_more_than_20_mb_refused_naming_the_argument_and_limit():
    # noise does not compress: ~8.6 MB of PNG each
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (1700, 1700, 3), dtype=np.uint8)
    one = image_block(big)
    assert image_info(one)["bytes"] > 8_000_000
    check_limits([one, one])
    with pytest.raises(ValidationError) as err:
        check_limits([one, one, one], field="images")
    assert err.value.field == "images"
    assert "20 MB" in str(err.value) and "Cohere accepts at most" in str(err.value)
    assert MAX_BYTES == 20_000_000


def test_count_images_in_history():
    msgs = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, image_block("https://x/1.png")],
        },
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "b"},
    ]
    assert len(count_images(msgs)) == 1


# -- export placeholder ------------------------------------------------------------------------------
def test_placeholder_is_short_and_describes_the_image():
    block = image_block(np.zeros((480, 640, 3), dtype=np.uint8))
    text = placeholder(block)
    assert text.startswith("[image 640×480 png ") and text.endswith((" KB]", " B]"))
    assert len(text) < 40
    assert placeholder(block["image_url"]["url"]) == text
    assert placeholder(image_block("https://x/y.png")) == "[image https://x/y.png]"
    assert (
        placeholder({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}})
        == "[image]"
    )


def test_importing_nbchat_images_loads_no_imaging_library():
    code = (
        "import sys, json, nbchat, nbchat.images, nbchat.imageformat;"
        "print(json.dumps([m for m in ('numpy', 'PIL', 'matplotlib', 'IPython') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# -- view thumbnails and stripped copies ------------------------------------------------------------
def test_thumbnail_is_small_and_made_from_the_kernel_copy():
    big = image_block(np.random.default_rng(5).integers(0, 256, (600, 900, 3), dtype=np.uint8))
    thumb = thumbnail(big)
    assert thumb.startswith("data:image/png;base64,")
    _, img = _decode({"image_url": {"url": thumb}})
    assert max(img.size) == 160 and img.size[0] > img.size[1]  # aspect kept
    assert len(thumb) < len(big["image_url"]["url"]) / 10
    small = image_block(np.zeros((20, 30), dtype=np.uint8))
    assert thumbnail(small) == small["image_url"]["url"]  # already small: as is
    assert thumbnail(image_block("https://example.org/a.png")) is None  # never fetched


def test_strip_images_keeps_everything_but_the_base64():
    block = image_block(np.zeros((480, 640, 3), dtype=np.uint8), "low")
    msg = {
        "role": "user",
        "content": [{"type": "text", "text": "what?"}, block, image_block("https://x/y.png")],
    }
    stripped = strip_images(msg)
    assert stripped["content"][0] == msg["content"][0]
    assert stripped["content"][1] == {
        "type": "image_url",
        "image_url": {"url": placeholder(block), "detail": "low"},
    }
    assert stripped["content"][2] == msg["content"][2]
    assert msg["content"][1] is block and block["image_url"]["url"].startswith(
        "data:"
    )  # not mutated
    assert strip_images({"role": "user", "content": "hi"}) == {"role": "user", "content": "hi"}
