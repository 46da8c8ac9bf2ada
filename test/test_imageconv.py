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


@pytest.mark.parametrize("encoding, order", [("rgb8", [0, 1, 2]), ("bgr8", [2, 1, 0]), ("rgba8", [0, 1, 2]),
                                             ("bgra8", [2, 1, 0])])
def test_colour_is_bt601_luma_within_one_level_with_padded_rows(encoding, order):
    """OpenCV's fixed-point cvtColor (what rosbags-image uses too, docs/ros.md), on rows with
    padding, which rosbags-image 0.10.4 misreads (it ignores step)."""
    ch = 4 if "a" in encoding else 3
    rng = np.random.default_rng(3)
    px = rng.integers(0, 256, (37, 53, ch), dtype=np.uint8)
    step = 53 * ch + 9
    buf = np.zeros((37, step), np.uint8)
    buf[:, :53 * ch] = px.reshape(37, -1)
    out = image_to_array(encoding, 37, 53, step, buf.tobytes())
    rgb = px[:, :, order].astype(np.float64)
    exact = rgb @ [0.299, 0.587, 0.114]
    assert out.dtype == np.uint8 and out.shape == (37, 53)
    assert np.abs(out - exact).max() <= 1.0


def test_colour_file_and_message_give_the_same_grey(tmp_path):
    """A goal image file and the same pixels as a camera message are the same grey image."""
    import cv2

    from latent_vs.imageconv import read_grey_image
    rng = np.random.default_rng(4)
    bgr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "goal.png"), bgr)
    msg = image_to_array("bgr8", 20, 30, 90, bgr.tobytes())
    np.testing.assert_array_equal(read_grey_image(str(tmp_path / "goal.png")), msg)
