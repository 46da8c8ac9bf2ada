"""Print latent_vs's package-internal imports, one `module -> module` line each.

Usage: python scripts/import_graph.py [--flag-upward] [--packages]
Every import inside a function counts too (lazy imports are still dependencies).
--packages collapses modules to their layer (control, learning, bench, ros, replay, models,
the other top-level modules as "core") and prints each layer-to-layer edge once.
--flag-upward prints only the edges the layering forbids: control/ -> learning/,
replay* -> ros/, and anything outside ros/ -> rclpy.
"""
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "latent_vs"


def module_name(path):
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path):
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None or not node.level:
                found.add(target)
            else:
                found.add(target)
            for alias in node.names:  # `from . import x` where x is a module
                candidate = f"{target}.{alias.name}"
                if (ROOT.parent / candidate.replace(".", "/")).with_suffix(".py").exists():
                    found.add(candidate)
    return mod, found


def edges():
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        mod, found = imports(path)
        for target in sorted(found):
            if target.startswith("latent_vs") and target != mod:
                out.append((mod, target))
            elif target.split(".")[0] == "rclpy" and ".ros" not in mod:
                out.append((mod, target))
    return out


def upward(src, dst):
    return ((".control" in src and ".learning" in dst)
            or (src.startswith("latent_vs.replay") and ".ros" in dst)
            or (dst.startswith("rclpy") and ".ros" not in src))


def layer(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) > 1 and parts[1] in ("control", "learning", "bench", "ros", "replay", "models"):
        return parts[1]
    return "rclpy" if parts[0] == "rclpy" else "core"


if __name__ == "__main__":
    if "--packages" in sys.argv:
        for a, b in sorted({(layer(s), layer(d)) for s, d in edges()} - {(x, x) for x in ("core", "control",
                           "learning", "bench", "ros", "replay", "models")}):
            print(f"{a} -> {b}" + ("   # UPWARD" if upward("latent_vs." + a, "latent_vs." + b) else ""))
        sys.exit(0)
    only_bad = "--flag-upward" in sys.argv
    bad = 0
    for src, dst in edges():
        flag = upward(src, dst)
        bad += flag
        if flag or not only_bad:
            print(f"{src} -> {dst}" + ("   # UPWARD" if flag else ""))
    print(f"# {bad} upward edge(s)", file=sys.stderr)
    sys.exit(1 if bad and only_bad else 0)
