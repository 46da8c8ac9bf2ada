#!/usr/bin/env python3
"""Write a `latent-vs bench` summary's rows into a model's meta.json "benchmark" field.

    python scripts/record_benchmark.py bench-results/summary.json models/default

Rows are keyed "<method>/<clean|perturbed>" and carry the command's configuration, so a model
directory states the figures it was measured at (the demo reads mlvs-k50/clean)."""
import json
import os
import sys


def main(summary_path: str, model_dir: str) -> int:
    with open(summary_path) as f:
        summary = json.load(f)
    meta_path = os.path.join(model_dir, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    bench = meta.setdefault("benchmark", {})
    for row in summary["rows"]:
        if row["method"] == "pbvs":
            continue
        key = f"{row['method']}/{'perturbed' if row['perturbed'] else 'clean'}"
        bench[key] = {k: row[k] for k in ("tasks", "converged_pct", "end_mm", "end_deg", "ape_cm", "ape_deg",
                                          "length_ratio", "stops") if k in row}
        bench[key]["bench_config"] = summary.get("config", {})
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(tmp, meta_path)
    print(f"{meta_path}: benchmark rows {sorted(bench)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
