"""Where the package's shipped files live: the ROS share directory when installed
(ament_index), else the source tree (running from a checkout)."""
from __future__ import annotations

import os
import sys

_SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def share_dir() -> str:
    """share/latent_vs of an installed package (ament index, else <prefix>/share/latent_vs where
    pip puts data files), or the source checkout's root."""
    try:
        from ament_index_python.packages import get_package_share_directory
        d = get_package_share_directory("latent_vs")
        if os.path.isdir(d):
            return d
    except Exception:  # not installed, or AMENT_PREFIX_PATH unset
        pass
    d = os.path.join(sys.prefix, "share", "latent_vs")
    return d if os.path.isdir(d) else _SRC_ROOT


def _first_existing(*rel: str) -> str:
    # a source checkout (package.xml beside the package) wins over an installed copy
    roots = ([_SRC_ROOT] if os.path.isfile(os.path.join(_SRC_ROOT, "package.xml")) else []) + [share_dir()]
    for root in roots:
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
