"""Every image kind an uncurated data set holds decodes to correct uint8 RGB; every bad file is a BadImage."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin, PngImagePlugin

from coarsecrop.data import images as images_mod
from coarsecrop.data.images import BadImage, image_size, load_image, load_image_or_reason


def _save(im: Image.Image, path, **kw):
    im.save(path, **kw)
    return path


def test_rgb_png_is_returned_unchanged(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    img, scale = load_image(_save(Image.fromarray(a), tmp_path / "a.png"))
    assert img.dtype == np.uint8 and img.shape == (7, 9, 3) and scale == 1.0
    np.testing.assert_array_equal(img, a)


def test_grayscale_and_one_bit(tmp_path):
    g = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    img, _ = load_image(_save(Image.fromarray(g, "L"), tmp_path / "g.png"))
    assert img.shape == (4, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], g)
    bits = Image.fromarray((np.indices((8, 8)).sum(0) % 2 * 255).astype(np.uint8)).convert("1")
    img, _ = load_image(_save(bits, tmp_path / "b.png"))
    assert set(np.unique(img)) == {0, 255}
    assert img[0, 0, 0] == 0 and img[0, 1, 0] == 255


def test_alpha_is_composited_on_black(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # transparent red -> black
    rgba[0, 1] = (0, 255, 0, 255)  # opaque green
    rgba[1, 0] = (200, 100, 50, 128)  # half -> half
    img, _ = load_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    np.testing.assert_array_equal(img[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(img[0, 1], [0, 255, 0])
    np.testing.assert_allclose(img[1, 0], [100, 50, 25], atol=1)
    la = Image.fromarray(np.array([[[200, 255], [200, 0]]], np.uint8), "LA")
    img, _ = load_image(_save(la, tmp_path / "la.png"))
    np.testing.assert_array_equal(img[0, :, 0], [200, 0])


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (3, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255, 10, 200, 30] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2])
    img, _ = load_image(_save(pal, tmp_path / "p.png"))
    np.testing.assert_array_equal(img[0], [[255, 0, 0], [0, 0, 255], [10, 200, 30]])
    img, _ = load_image(_save(pal, tmp_path / "pt.png", transparency=1))
    np.testing.assert_array_equal(img[0], [[255, 0, 0], [0, 0, 0], [10, 200, 30]])
    img, _ = load_image(_save(pal, tmp_path / "pt.gif", transparency=0))
    np.testing.assert_array_equal(img[0, 0], [0, 0, 0])


def test_cmyk_jpeg_decodes_to_the_right_colour(tmp_path):
    path = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "c.jpg", quality=95)
    assert Image.open(path).mode == "CMYK"
    img, _ = load_image(path)
    np.testing.assert_allclose(img[8, 8], [255, 0, 0], atol=8)


def test_sixteen_bit_gradient_maps_monotonically_to_full_range(tmp_path):
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(1, 64).repeat(3, 0)
    path = _save(Image.fromarray(ramp), tmp_path / "g16.png")
    assert Image.open(path).mode in ("I;16", "I")
    img, _ = load_image(path)
    row = img[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 60  # scaled, not clipped at 255


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_modes_in_memory(mode):
    values = np.array([[0, 257, 32896, 65535]])
    if mode == "I":
        im = Image.fromarray(values.astype(np.int32), "I")
    else:
        dtype = ">u2" if mode == "I;16B" else "<u2"
        im = Image.frombytes(mode, (4, 1), values.astype(dtype).tobytes())
    rgb = np.asarray(images_mod._to_rgb(im))
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])


def test_thirty_two_bit_and_float_are_stretched():
    im = Image.fromarray(np.array([[0, 100000, 200000]], np.int32), "I")
    np.testing.assert_array_equal(np.asarray(images_mod._to_rgb(im))[0, :, 0], [0, 128, 255])
    im = Image.fromarray(np.array([[-1.0, 0.0, 1.0]], np.float32), "F")
    np.testing.assert_array_equal(np.asarray(images_mod._to_rgb(im))[0, :, 0], [0, 128, 255])


def _rotated_jpeg(path, orientation: int = 6):
    a = np.zeros((20, 40, 3), np.uint8)  # stored: 40 wide, 20 high; left half red, right half blue
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(a).save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_applied(tmp_path):
    path = _rotated_jpeg(tmp_path / "r.jpg")  # 6: display rotated 90 degrees clockwise
    img, scale = load_image(path)
    assert img.shape == (40, 20, 3) and scale == 1.0
    assert img[3, 10, 0] > 200 and img[3, 10, 2] < 50  # stored left (red) is now on top
    assert img[-3, 10, 2] > 200 and img[-3, 10, 0] < 50
    assert image_size(path) == (20, 40)


def test_large_jpeg_with_max_side_is_bounded_and_scaled(tmp_path):
    a = np.zeros((1200, 1600, 3), np.uint8)
    a[:, :800] = (250, 0, 0)
    path = _save(Image.fromarray(a), tmp_path / "big.jpg", quality=90)
    img, scale = load_image(path, max_side=200)
    assert img.shape == (150, 200, 3) and scale == pytest.approx(8.0)
    assert img[75, 50, 0] > 200 and img[75, 150, 0] < 50
    img, scale = load_image(path, max_side=5000)  # not larger: untouched
    assert img.shape == (1200, 1600, 3) and scale == 1.0


def test_large_png_and_rotated_jpeg_with_max_side(tmp_path):
    path = _save(Image.new("RGB", (900, 300), (0, 90, 0)), tmp_path / "wide.png")
    img, scale = load_image(path, max_side=90)
    assert img.shape == (30, 90, 3) and scale == pytest.approx(10.0)
    np.testing.assert_array_equal(img[15, 45], [0, 90, 0])
    img, scale = load_image(_rotated_jpeg(tmp_path / "r.jpg"), max_side=10)
    assert img.shape == (10, 5, 3) and scale == pytest.approx(4.0)


def test_decompression_bomb_needs_max_side(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (100, 80), (5, 6, 7)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImage, match="max_side") as err:
        load_image(path)
    assert str(path) in str(err.value)
    img, scale = load_image(path, max_side=50)
    assert img.shape == (40, 50, 3) and scale == pytest.approx(2.0)
    assert image_size(path) == (100, 80)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored


def _truncated(path, source, keep):
    path.write_bytes(source.read_bytes()[:keep])
    return path


@pytest.mark.parametrize("kind, reason", [
    ("missing", "missing file"), ("directory", "directory"), ("empty", "empty file"),
    ("text", "not an image"), ("truncated_jpeg", "truncated"), ("truncated_png", "truncated"),
])
def test_bad_files_raise_bad_image_naming_the_file(tmp_path, kind, reason):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8))
    if kind == "missing":
        path = tmp_path / "gone.jpg"
    elif kind == "directory":
        path = tmp_path / "folder.jpg"
        path.mkdir()
    elif kind == "empty":
        path = tmp_path / "empty.jpg"
        path.write_bytes(b"")
    elif kind == "text":
        path = tmp_path / "notes.jpg"
        path.write_text("not a picture\n")
    elif kind == "truncated_jpeg":
        path = _truncated(tmp_path / "t.jpg", _save(noise, tmp_path / "full.jpg", quality=95), 4000)
    else:
        path = _truncated(tmp_path / "t.png", _save(noise, tmp_path / "full.png"), 30000)
    with pytest.raises(BadImage, match=reason) as err:
        load_image(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert isinstance(err.value, ValueError)
    image, scale, why = load_image_or_reason(path)
    assert image is None and why == message


def test_image_size_reads_header_and_fails_clearly(tmp_path):
    path = _save(Image.new("RGB", (33, 17)), tmp_path / "a.png")
    assert image_size(path) == (33, 17)
    with pytest.raises(BadImage, match="missing"):
        image_size(tmp_path / "nope.png")


def _count_decodes(monkeypatch) -> list:
    decoded, real = [], PngImagePlugin.PngImageFile.load

    def load(self):
        decoded.append(self.filename)
        return real(self)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", load)
    return decoded


def _rotated_png(path, orientation: int = 6):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.new("RGB", (40, 20), (9, 9, 9)).save(path, exif=exif.tobytes())
    return path


def test_a_pngs_size_and_orientation_are_read_without_decoding_a_pixel(tmp_path, monkeypatch):
    """PIL's PNG reader decodes the whole image to look for EXIF that is not in the headers: image_size (one
    call per file when a folder is opened) and load_image's size checks must not."""
    plain = _save(Image.new("RGB", (33, 17)), tmp_path / "a.png")
    rotated = _rotated_png(tmp_path / "r.png")
    decoded = _count_decodes(monkeypatch)
    assert image_size(plain) == (33, 17)
    assert image_size(rotated) == (20, 40)  # its eXIf chunk is in the headers
    monkeypatch.setattr(images_mod, "MAX_FULL_DECODE_PIXELS", 100)
    with pytest.raises(BadImage, match="too large to decode"):  # refused before any decoding
        load_image(plain, max_side=10)
    assert decoded == []


def test_a_png_exif_chunk_after_the_pixels_counts_as_absent_on_every_path(tmp_path):
    """Such a chunk is found only by decoding; the size read and the decode agree that it is not there."""
    data = _rotated_png(tmp_path / "r.png").read_bytes()
    start = data.index(b"eXIf") - 4
    end = start + 12 + int.from_bytes(data[start:start + 4], "big")
    chunk, rest = data[start:end], data[:start] + data[end:]
    late = tmp_path / "late.png"
    late.write_bytes(rest[:-12] + chunk + rest[-12:])  # moved to just before IEND
    assert Image.open(late).getexif().get(0x0112) == 6  # PIL reads it, after decoding
    assert image_size(late) == (40, 20)
    assert load_image(late)[0].shape == (20, 40, 3)
    assert load_image(tmp_path / "r.png")[0].shape == (40, 20, 3)  # in the headers: applied


def test_a_camera_jpeg_opened_as_mpo_is_decoded_reduced(tmp_path, monkeypatch):
    """Phone and camera JPEGs with an MPF block open as MPO (a JPEG reader): DCT-scaled under max_side too."""
    a = np.zeros((400, 800, 3), np.uint8)
    a[:, :400] = (250, 0, 0)
    path = tmp_path / "cam.jpg"
    Image.fromarray(a).save(path, format="MPO", save_all=True, append_images=[Image.new("RGB", (80, 40))])
    assert Image.open(path).format == "MPO"
    drafts = []
    real = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, *args: drafts.append(args) or real(self, *args))
    img, scale = load_image(path, max_side=100)
    assert drafts and img.shape == (50, 100, 3) and scale == pytest.approx(8.0)
    assert img[25, 20, 0] > 200 and img[25, 80, 0] < 50
