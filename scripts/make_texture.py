#!/usr/bin/env python3
"""Generate the second scene texture the package ships (latent_vs/data/poster_generated.png):
a seeded "your own scene" stand-in that is not the coffee poster, to measure that the
training recipe carries over to another scene.

    python scripts/make_texture.py [--out latent_vs/data/poster_generated.png] [--seed 7]

The image mixes what real posters have at several scales: large soft regions (fractal
noise), filled shapes with hard edges, line strokes and small print-like dots, with no
repetition (a periodic texture would make distinct poses look alike)."""
import argparse
import sys

import cv2
import numpy as np


def fractal_noise(rng: np.random.Generator, h: int, w: int, octaves: int = 6) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for o in range(octaves):
        cells = 2 ** (o + 2)
        grid = rng.normal(size=(cells * h // w + 2, cells + 2)).astype(np.float32)
        out += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) / (1.6 ** o)
    out -= out.min()
    return out / out.max()


def make_texture(seed: int = 7, width: int = 1200, height: int = 900) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = 60 + 130 * fractal_noise(rng, height, width)
    img = img.astype(np.uint8)
    for _ in range(70):                                   # filled shapes, hard edges
        grey = int(rng.integers(0, 256))
        c = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(15, 140)), int(rng.integers(15, 140)))
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, grey, -1, cv2.LINE_AA)
        else:
            pts = (np.array(c) + rng.integers(-130, 130, (int(rng.integers(3, 7)), 2))).astype(np.int32)
            cv2.fillPoly(img, [pts], grey, cv2.LINE_AA)
    for _ in range(60):                                   # strokes
        a = rng.integers(0, [width, height])
        b = a + rng.integers(-250, 250, 2)
        cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), int(rng.integers(0, 256)),
                 int(rng.integers(2, 9)), cv2.LINE_AA)
    for _ in range(400):                                  # print-like dots
        c = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, c, int(rng.integers(2, 7)), int(rng.integers(0, 256)), -1, cv2.LINE_AA)
    return img


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="latent_vs/data/poster_generated.png")
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    if not cv2.imwrite(a.out, make_texture(a.seed)):
        print(f"make_texture: error: cannot write {a.out}", file=sys.stderr)
        return 1
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
