"""Table I: our rows beside the paper's, as text (terminal), Markdown and JSON (atomic writes)."""
from __future__ import annotations

import json
import math
import os
import tempfile

# Paper, Table I (500 tasks; mean ± std over converged tasks). Key: (method, perturbed).
# Columns: converged %, end error mm, end error °, APE cm, APE °, length ratio.
PAPER_TABLE: dict[tuple[str, bool], tuple] = {
    ("dvs", False): (9.8, (0.0, 0.0), (0.0, 0.0), (17.32, 12.48), (31.0, 14.35), (2.6, 4.9)),
    ("aevs", False): (33.6, (0.01, 0.0), (0.0, 0.0), (2.74, 6.36), (2.66, 6.4), (2.75, 4.85)),
    ("pbvs-cnn", False): (75.6, (33.52, 6.45), (1.71, 0.65), (3.13, 1.04), (1.85, 0.96), (1.11, 0.08)),
    ("pbvs-cnn", True): (36.8, (32.21, 15.71), (2.37, 1.57), (4.0, 0.74), (2.55, 0.64), (1.12, 0.1)),
    ("mlvs-k1", False): (99.2, (3.02, 1.21), (0.21, 0.12), (0.71, 0.88), (1.59, 3.28), (1.46, 0.97)),
    ("mlvs-k1", True): (73.8, (19.42, 12.77), (1.96, 1.28), (3.01, 0.71), (3.68, 2.33), (1.33, 0.32)),
    ("mlvs-k50", False): (100.0, (0.04, 0.03), (0.0, 0.0), (0.4, 0.72), (1.08, 2.5), (1.18, 0.23)),
    ("mlvs-k50", True): (76.0, (19.29, 12.81), (1.92, 1.28), (3.31, 0.61), (3.72, 1.6), (1.14, 0.11)),
}
COLUMNS = ("method", "I*", "source", "conv. %", "end mm", "end °", "APE cm", "APE °", "length ratio")


def _pm(ms, digits=2) -> str:
    m, s = ms
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def table_rows(rows: list[dict]) -> list[list[str]]:
    """Our summary rows (from metrics.summarize plus 'label', 'method', 'perturbed'), each followed
    by the paper's row for the same method and I* when the paper has one."""
    out = []
    for r in rows:
        istar = "perturbed" if r["perturbed"] else "clean"
        out.append([r["label"], istar, "ours", f"{r['converged_pct']:.1f}", _pm(r["end_mm"]), _pm(r["end_deg"]),
                    _pm(r["ape_cm"]), _pm(r["ape_deg"]), _pm(r["length_ratio"])])
        paper = PAPER_TABLE.get((r["method"], bool(r["perturbed"])))
        if paper is not None:
            conv, *rest = paper
            out.append([r["label"], istar, "paper", f"{conv:.1f}"] + [_pm(x) for x in rest])
    return out


def markdown(rows: list[dict], header: str = "") -> str:
    lines = [header] if header else []
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(rows)]
    return "\n".join(lines) + "\n"


def text(rows: list[dict]) -> str:
    body = [list(COLUMNS)] + table_rows(rows)
    widths = [max(len(r[i]) for r in body) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in body)


def write_atomic(path: str, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, then rename: never a half-written file."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _clean(o):
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_json(path: str, obj) -> None:
    write_atomic(path, json.dumps(_clean(obj), indent=1))
