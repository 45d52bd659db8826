"""Image decoding: odd modes become the right RGB pixels; bad files fail with their path and the reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lmmreg.data.images import BadImageError, is_supported, load_rgb
from tests.data_fixtures import image_bytes, write_image


def test_palette_image_keeps_its_colours(tmp_path):
    img = Image.new("P", (4, 2))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    img.save(tmp_path / "p.png")
    out = load_rgb(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((1, 0)) == (0, 0, 255)


def test_rgba_and_transparent_palette_are_composited_on_white(tmp_path):
    Image.new("RGBA", (3, 3), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("RGBA", (3, 3), (10, 200, 30, 255)).save(tmp_path / "opaque.png")
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.save(tmp_path / "pal.png", transparency=0)
    assert load_rgb(tmp_path / "clear.png").getpixel((1, 1)) == (255, 255, 255)
    assert load_rgb(tmp_path / "opaque.png").getpixel((1, 1)) == (10, 200, 30)
    assert load_rgb(tmp_path / "pal.png").getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    r, g, b = load_rgb(tmp_path / "cmyk.jpg").getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60  # pure red ink


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = load_rgb(tmp_path / "g16.png")
    assert [out.getpixel(p)[0] for p in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 63, 127, 255]


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    assert out.getpixel((10, 5))[2] > 200  # the blue half is now on top


def test_oversized_image_hits_the_limit_before_decoding(tmp_path):
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")  # 9 Mpx that would decode fine
    with pytest.raises(BadImageError, match=r"big\.png: 3000x3000 = 9000000 pixels exceeds the limit 1000000"):
        load_rgb(tmp_path / "big.png", max_pixels=1_000_000)
    assert load_rgb(tmp_path / "big.png", max_pixels=10_000_000).size == (3000, 3000)


@pytest.mark.parametrize("name, content, reason", [
    ("empty.jpg", b"", "zero-byte file"),
    ("truncated.jpg", image_bytes(1, size=(64, 64))[:400], "cannot decode"),
    ("garbage.png", b"not an image at all" * 10, "cannot decode"),
])
def test_bad_files_name_their_path(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as e:
        load_rgb(tmp_path / name)
    assert str(e.value).startswith(str(tmp_path / name))


def test_missing_file_and_foreign_format(tmp_path):
    with pytest.raises(BadImageError, match="file not found"):
        load_rgb(tmp_path / "nope.jpg")
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PCX")  # a real image, but not one of the accepted formats
    (tmp_path / "renamed.jpg").write_bytes(buf.getvalue())
    with pytest.raises(BadImageError, match="unsupported format PCX"):
        load_rgb(tmp_path / "renamed.jpg")


def test_jpeg_named_png_is_read_by_content(tmp_path):
    write_image(tmp_path / "x.png", 3, fmt="JPEG")  # BAR's README says PNG, the files are JPEG
    assert load_rgb(tmp_path / "x.png").size == (12, 10)
    assert is_supported("a/B.JPG") and not is_supported("a/b.txt")
