"""sensor_msgs/Image fields <-> grey arrays (no ROS needed)."""
import array

import numpy as np
import pytest

from latent_vs.imageconv import array_to_fields, array_to_fields_as, fit_image, image_to_array


def _img(h=7, w=12):
    return (np.arange(h * w) * 37 % 256).astype(np.uint8).reshape(h, w)


@pytest.mark.parametrize("encoding", ["mono8", "mono16", "rgb8", "bgr8", "rgba8", "bgra8"])
def test_every_encoding_round_trips_to_the_same_grey(encoding):
    img = _img()
    f = array_to_fields_as(img, encoding)
    f["data"] = array.array("B", f["data"])  # what rclpy hands over
    np.testing.assert_array_equal(image_to_array(**f), img)


def test_colour_uses_luma_and_channel_order():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    f = dict(height=2, width=2, step=6, data=rgb.tobytes())
    red_as_rgb = image_to_array("rgb8", **f)
    red_as_bgr = image_to_array("bgr8", **f)  # the same bytes read as blue
    assert red_as_rgb[0, 0] == round(0.299 * 255)
    assert red_as_bgr[0, 0] == round(0.114 * 255)


def test_mono16_big_endian_and_full_scale():
    v = np.array([[0, 65535, 32896]], dtype=">u2")
    out = image_to_array("mono16", 1, 3, 6, v.tobytes(), is_bigendian=True)
    np.testing.assert_array_equal(out, [[0, 255, 128]])


def test_row_padding_is_dropped():
    img = _img(3, 5)
    padded = np.zeros((3, 8), np.uint8)
    padded[:, :5] = img
    np.testing.assert_array_equal(image_to_array("mono8", 3, 5, 8, padded.tobytes()), img)


@pytest.mark.parametrize("kwargs, message", [
    (dict(encoding="yuv422", height=2, width=2, step=4, data=bytes(8)), "unsupported image encoding 'yuv422'"),
    (dict(encoding="mono8", height=2, width=2, step=2, data=bytes(3)), "needs 4"),
    (dict(encoding="rgb8", height=2, width=2, step=4, data=bytes(8)), "step 4 is smaller"),
    (dict(encoding="mono8", height=0, width=2, step=2, data=b""), "empty image"),
])
def test_bad_images_raise_a_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        image_to_array(**kwargs)


def test_array_to_fields_is_mono8():
    f = array_to_fields(_img())
    assert (f["encoding"], f["height"], f["width"], f["step"]) == ("mono8", 7, 12, 12)
    with pytest.raises(ValueError):
        array_to_fields(np.zeros((2, 2, 3), np.uint8))


def test_fit_image_crops_to_aspect_then_resizes():
    img = np.zeros((480, 640), np.uint8)
    img[:, 80:560] = 200  # the centre square is bright, the side bands dark
    out = fit_image(img, 224, 224)
    assert out.shape == (224, 224)
    assert out.min() == 200  # the 80 px side bands were cropped away
