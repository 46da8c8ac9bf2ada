"""Parameter files in the ROS 2 `/node: ros__parameters:` shape, read without ROS (the demo
takes its node parameters from config/sim.yaml, as `ros2 launch` would)."""
from __future__ import annotations

import yaml

from ..errors import UserError, yaml_error


def read_params_file(path: str) -> dict[str, dict]:
    """{node name (no namespace or slashes): {parameter: value}}."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except OSError as e:
        raise UserError(f"cannot read parameter file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    out = {}
    for key, body in doc.items():
        if not isinstance(body, dict) or "ros__parameters" not in body:
            raise UserError(f"{path}: '{key}' is not in the '/node: ros__parameters:' shape")
        out[str(key).rstrip("/").split("/")[-1]] = dict(body["ros__parameters"] or {})
    return out
