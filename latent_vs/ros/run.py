"""The `main` of every node executable: rclpy set-up, spin, and a clean end.

  * a UserError (a missing model, a bad parameter) at start-up prints one line naming the
    problem and exits 1, no traceback;
  * Ctrl-C (SIGINT) and SIGTERM (what `ros2 launch` sends last) end the spin within
    SPIN_PERIOD_S, idle or busy, also with use_sim_time and no /clock (the spin wakes on the
    wall clock to let Python run its signal handlers); the node's `stop()` runs before the
    context shuts down, so the controller can still publish its final zero twist (rclpy's own
    signal handler would shut the context down first).
"""
from __future__ import annotations

import os
import signal
import sys

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from ..errors import UserError
from ..threads import quiet_threads

SPIN_PERIOD_S = 0.1   # the longest a signal waits for Python to see it [s] (wall clock)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_node(node_class, prog: str, args=None) -> int:
    """Run a node until a signal or a start-up error; ends the process with the exit status."""
    args = sys.argv if args is None else args
    quiet_threads()   # one BLAS thread; the encoder sets torch's threads from its `threads` parameter
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    node, rc = None, 0
    executor = None
    try:
        node = node_class()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok():
            # rclpy.spin waits in C without a timeout, where Python never runs its signal
            # handlers: an idle node (no timer, or timers on a sim clock that never ticks)
            # would ignore SIGINT and SIGTERM
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    except (UserError, ParameterException) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        rc = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # one clean stop: later signals wait for it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if node is not None:
            try:
                if hasattr(node, "stop"):
                    node.stop()
            except KeyboardInterrupt:
                pass
            if executor is not None:
                executor.remove_node(node)
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=0.1)
        rclpy.try_shutdown()
    # the node is down and its last messages are out: skip the interpreter's teardown of torch
    # and friends (most of a second on a loaded PC), so that a signal ends the process at once
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
