"""Test session setup: ROS 2 isolation (own domain id, loopback discovery) before any rclpy
import, headless plotting, and a quiet CPU thread pool."""
import os
import sys
import tempfile

os.environ.setdefault("ROS_DOMAIN_ID", str(20 + os.getpid() % 70))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("ROS_LOG_DIR", os.path.join(tempfile.gettempdir(), "latent_vs_ros_logs"))
os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
