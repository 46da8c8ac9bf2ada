"""The latent-norm bound of a shipped model, as training now records it (meta.json's
`latent_norm`): ‖z‖ over ψ of the held-out images (clean and perturbed, rendered as training
renders them from the model's own config) and φ of their poses.

    python scripts/latent_norm_bound.py models/own_scene            # print the record
    python scripts/latent_norm_bound.py models/own_scene --write    # also add it to meta.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from latent_vs.learning import data  # noqa: E402
from latent_vs.learning.config import config_from_dict  # noqa: E402
from latent_vs.models import load_model  # noqa: E402
from latent_vs.safety import latent_norm_record  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--write", action="store_true", help="add the record to the model's meta.json")
    a = ap.parse_args()
    model = load_model(a.model_dir)
    cfg = config_from_dict(model.meta["config"])
    held = data.make_heldout(cfg.data.heldout, cfg.heldout_seed(), model.scene, cfg.camera_model(), **cfg.data.pool())
    rec = latent_norm_record(model.encode(held.clean), model.encode(held.perturbed), model.embed_poses(held.r),
                             source=f"ψ of {len(held.r)} held-out images (clean and perturbed) and φ of their poses "
                                    "(scripts/latent_norm_bound.py)")
    print(json.dumps({"latent_norm": rec}, indent=1, ensure_ascii=False))
    if a.write:
        path = os.path.join(a.model_dir, "meta.json")
        with open(path) as f:
            meta = json.load(f)
        meta["latent_norm"] = rec
        with open(path, "w") as f:
            json.dump(meta, f, indent=1)   # the file's own layout
        print(f"wrote latent_norm into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
