"""Where the package's shipped files live: the ROS share directory when installed
(ament_index), else the source tree (running from a checkout)."""
from __future__ import annotations

import os

_SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def share_dir() -> str:
    """share/latent_vs of an installed package, or the source checkout's root."""
    try:
        from ament_index_python.packages import get_package_share_directory
        d = get_package_share_directory("latent_vs")
        if os.path.isdir(d):
            return d
    except Exception:  # not installed, or AMENT_PREFIX_PATH unset
        pass
    return _SRC_ROOT


def _first_existing(*rel: str) -> str:
    for root in (_SRC_ROOT, share_dir()):
        p = os.path.join(root, *rel)
        if os.path.exists(p):
            return p
    return os.path.join(share_dir(), *rel)


def model_dir(name: str = "default") -> str:
    """models/<name>; a path that exists is returned unchanged."""
    if os.path.isdir(name):
        return os.path.abspath(name)
    return _first_existing("models", name)


def config_file(name: str) -> str:
    """config/<name>; a path that exists is returned unchanged."""
    if os.path.isfile(name):
        return os.path.abspath(name)
    return _first_existing("config", name)


def launch_dir() -> str:
    return _first_existing("launch")
