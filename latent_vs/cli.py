"""The `latent-vs` command. Each subcommand lives in its own module as `main(argv) -> int`;
this file only dispatches and turns user errors into one clear line and a non-zero exit."""
from __future__ import annotations

import importlib
import sys

from .errors import UserError

COMMANDS = {
    "demo": ("latent_vs.ros.demo", "closed-loop servo demo in simulation over ROS 2 topics (the main job)"),
    "bench": ("latent_vs.bench.run", "Table I benchmark: N look-at/look-from tasks x methods"),
    "train": ("latent_vs.learning.train", "train a model from a config (YAML)"),
    "perf": ("latent_vs.bench.perf", "per-step latency and memory of the MLVS controller"),
    "latency": ("latent_vs.ros.latency", "image -> twist latency over DDS"),
    "replay": ("latent_vs.replay", "replay a ROS 2 bag offline (or --publish it live)"),
    "record": ("latent_vs.ros.record", "record a simulated or live run to a ROS 2 bag"),
    "tasks": ("latent_vs.tasks", "print the initial-error statistics of the benchmark tasks"),
    "figures": ("latent_vs.bench.figures", "the paper's Fig. 3a, 3b and a Fig. 4-style panel as PNGs"),
}


def usage() -> str:
    lines = ["usage: latent-vs COMMAND [options]   (latent-vs COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<9} {doc}" for name, (_mod, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"latent-vs: error: unknown command '{name}'\n\n{usage()}", file=sys.stderr)
        return 2
    module_name = COMMANDS[name][0]
    if name == "replay" and "--publish" in rest and not {"-h", "--help"} & set(rest):
        module_name = "latent_vs.ros.bag_publisher"   # the live half of replay needs ROS 2
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        print(f"latent-vs {name}: error: cannot load {module_name} ({e}); "
              "re-run `make setup` (scripts/setup_env.sh) to refresh the installed package", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except UserError as e:
        print(f"latent-vs {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latent-vs {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
