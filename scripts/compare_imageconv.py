"""latent_vs.imageconv against rosbags-image (0.10.4) on the encodings the nodes accept:
pixels, row padding, per-image time, and the offline replay throughput with each.

    PYTHONPATH=<dir with rosbags-image> python scripts/compare_imageconv.py [--replay BAG --model DIR]

rosbags-image is not a dependency of latent_vs (docs/ros.md says why); install it beside
(`pip install --no-deps --target DIR rosbags-image==0.10.4`) to run this."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np

from latent_vs import imageconv

CHANNELS = {"mono8": (1, 1), "mono16": (1, 2), "rgb8": (3, 1), "bgr8": (3, 1), "rgba8": (4, 1), "bgra8": (4, 1)}


def theirs(encoding, height, width, step, data, is_bigendian=False):
    """rosbags-image's message_to_cvimage(msg, 'mono8') on the same fields."""
    from rosbags.image import message_to_cvimage
    msg = SimpleNamespace(encoding=encoding, height=height, width=width, step=step, data=data,
                          is_bigendian=is_bigendian)
    return message_to_cvimage(msg, "mono8")


def make(encoding, h, w, pad, rng):
    ch, depth = CHANNELS[encoding]
    px = rng.integers(0, 256 ** depth, size=(h, w, ch), dtype=np.uint16 if depth == 2 else np.uint8)
    row = px.reshape(h, w * ch).view(np.uint8) if depth == 1 else px.reshape(h, w * ch).astype("<u2").view(np.uint8)
    step = row.shape[1] + pad
    buf = np.zeros((h, step), np.uint8)
    buf[:, :row.shape[1]] = row
    return dict(encoding=encoding, height=h, width=w, step=step, data=buf.ravel())


def timeit(fn, f, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(**f)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def compare(h=480, w=640, n=100):
    rng = np.random.default_rng(0)
    out = {}
    for enc in imageconv.SUPPORTED_ENCODINGS:
        f = make(enc, h, w, 0, rng)
        a, b = imageconv.image_to_array(**f), theirs(**f)
        padded = make(enc, h, w, 64, rng)
        try:
            bp = theirs(**padded)
            pad_ok = bool(np.array_equal(imageconv.image_to_array(**padded), bp))
            pad = "same" if pad_ok else "different pixels (rows misread)"
        except Exception as e:  # noqa: BLE001
            pad = f"{type(e).__name__}: {e}"
        out[enc] = {"ours_ms": timeit(imageconv.image_to_array, f, n), "theirs_ms": timeit(theirs, f, n),
                    "max_abs_diff": int(np.abs(a.astype(int) - b.astype(int)).max()),
                    "theirs_dtype": str(b.dtype), "padded_rows": pad}
    return out


def replay(bag, model, n_runs=4):
    """images/s of `latent-vs replay BAG --model M --converged-translation 0 --quiet` (the
    README's throughput command), in turn with each converter behind bags.image_from_msg."""
    import os
    import tempfile

    from latent_vs import replay as replay_mod
    res = {}
    original = imageconv.image_to_array
    for name, fn in (("ours", original), ("rosbags-image", theirs)) * n_runs:
        imageconv.image_to_array = fn
        with tempfile.TemporaryDirectory() as out:
            try:
                argv = [bag, "--converged-translation", "0", "--quiet", "--out", out]
                assert replay_mod.main(argv + (["--model", model] if model else [])) == 0
            finally:
                imageconv.image_to_array = original
            tp = json.load(open(os.path.join(out, "summary.json")))["throughput"]
        res.setdefault(name, {"images_per_s": [], "read_decode_ms": []})
        res[name]["images_per_s"].append(round(tp["images_per_s"], 1))
        res[name]["read_decode_ms"].append(round(tp["read_decode_ms_per_image"], 2))
    for r in res.values():
        r["median_images_per_s"] = statistics.median(r["images_per_s"])
        r["median_read_decode_ms"] = statistics.median(r["read_decode_ms"])
    return res


def make_rgb_bag(src, dst, size=(640, 480)):
    """A copy of bag `src` with its images as `size` rgb8 (a typical colour camera)."""
    import cv2

    from latent_vs import bags
    b = bags.Bag(src)
    with bags.BagWriter(dst) as w:
        for m in b.messages():
            msg = m.msg
            if m.topic in ("/image", "/goal_image"):
                img = cv2.resize(bags.image_from_msg(msg), size, interpolation=cv2.INTER_LINEAR)
                msg = bags.image_msg(img, bags.stamp_ns(msg), msg.header.frame_id, "rgb8")
            w.write(m.topic, msg, m.t_ns)
        for k, v in b.custom_data.items():
            w.set_custom_data(k, v)
    return dst


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replay", metavar="BAG")
    ap.add_argument("--model", default="")
    ap.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    ap.add_argument("--make-rgb-bag", nargs=2, metavar=("SRC", "DST"), help="write a 640x480 rgb8 copy of SRC and stop")
    a = ap.parse_args(argv)
    if a.make_rgb_bag:
        make_rgb_bag(*a.make_rgb_bag, size=tuple(a.size))
        return 0
    print(json.dumps({"conversion_640x480": compare(a.size[1], a.size[0])}, indent=1))
    if a.replay:
        print(json.dumps({"replay_images_per_s": replay(a.replay, a.model)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
