"""The `main` of every node executable: rclpy set-up, spin, and a clean end.

  * a UserError (a missing model, a bad parameter) at start-up prints one line naming the
    problem and exits 1, no traceback;
  * Ctrl-C (SIGINT) and SIGTERM (what `ros2 launch` sends last) end the spin; the node's
    `stop()` runs before the context shuts down, so the controller can still publish its
    final zero twist (rclpy's own signal handler would shut the context down first).
"""
from __future__ import annotations

import signal
import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.signals import SignalHandlerOptions

from ..errors import UserError


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_node(node_class, prog: str, args=None) -> int:
    args = sys.argv if args is None else args
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    node, rc = None, 0
    try:
        node = node_class()
        rclpy.spin(node)
    except (UserError, ParameterException) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        rc = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            try:
                if hasattr(node, "stop"):
                    node.stop()
            except KeyboardInterrupt:  # a second signal while stopping: still clean up
                pass
            node.destroy_node()
        rclpy.try_shutdown()
    return rc
