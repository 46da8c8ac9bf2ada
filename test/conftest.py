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

import pytest  # noqa: E402


# ------------------------------------------------------------------ shared by the ROS tests
@pytest.fixture(scope="module")
def ros():
    """rclpy's default context, initialised once per test module and shut down after it (each
    module starts on a fresh context). ROS test modules take it for every test with
    `pytestmark = pytest.mark.usefixtures("ros")`; modules that init their own contexts don't."""
    import rclpy
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def ex():
    """A SingleThreadedExecutor; its nodes are removed and destroyed after the test."""
    from rclpy.executors import SingleThreadedExecutor
    executor = SingleThreadedExecutor()
    yield executor
    for node in list(executor.get_nodes()):
        executor.remove_node(node)
        node.destroy_node()
    executor.shutdown()


@pytest.fixture
def procs():
    """subprocess.Popen objects a test appends; any still running are killed after it."""
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.communicate(timeout=10)


@pytest.fixture(scope="session")
def random_model(tmp_path_factory):
    """random_model(name, latent_dim) -> the directory of a freshly exported model with random
    weights (a real TorchScript ψ/φ: ImageEncoder(10, 4, 64), PoseNet; 64 px grey images, the
    default scene, seed 0), for tests that need a model but not a trained one."""
    def export(name: str, latent_dim: int) -> str:
        import torch

        from latent_vs.camera import default_camera
        from latent_vs.learning.export import export_model
        from latent_vs.learning.nets import ImageEncoder, PoseNet
        from latent_vs.scene import SceneConfig, goal_pose
        torch.manual_seed(0)
        scene = SceneConfig()
        meta = {"name": name, "latent_dim": latent_dim,
                "image": {"size": 64, "channels": 1, "mean": 0.5, "std": 0.25},
                "camera": default_camera(64).to_dict(), "scene": scene.to_dict(),
                "goal_pose": goal_pose(scene).tolist(), "w_t": 0.4, "w_r": 0.9}
        out = str(tmp_path_factory.mktemp("models") / "random")
        export_model(out, ImageEncoder(10, 4, 64, latent_dim=latent_dim), PoseNet(latent_dim=latent_dim), meta)
        return out
    return export
