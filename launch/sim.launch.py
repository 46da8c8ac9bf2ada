"""The simulated closed loop as separate processes: sim camera + encoder + controller
(`ros2 launch latent_vs sim.launch.py [method:=pbvs] [seed:=3] [namespace:=/sim1]`).
`latent-vs demo` runs the same nodes in one process.

Parameters come from config/sim.yaml (or params_file:=FILE). The sim camera publishes the
goal view on goal_image and the camera_info of the camera it renders with (the encoder
reports a match), and the controller starts servoing at once (autostart). Watch it with
`ros2 topic echo /controller/state` and `ros2 topic echo /controller/error_norm`.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("namespace", "", "ROS namespace of the three nodes (empty: none)"),
    ("use_sim_time", "false", "take time from /clock (the sim camera keeps its own wall-clock rate)"),
    ("log_level", "info", "log level of the nodes: debug, info, warn, error or fatal"),
    ("params_file", PathJoinSubstitution([FindPackageShare("latent_vs"), "config", "sim.yaml"]),
     "node parameter file (/**/<node>: ros__parameters: keys)"),
    ("model_dir", "", "model directory (empty: the package's models/default)"),
    ("method", "mlvs", "control law: mlvs (encoder + model), pbvs (true pose, no model) or dvs (image)"),
    ("seed", "0", "seeded look-at/look-from start pose of the simulated camera"),
    ("strict_intrinsics", "false",
     "true: the encoder publishes no latent unless the sim camera's camera_info matches the model's intrinsics"),
]


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
    A = {name: LaunchConfiguration(name) for name, _d, _doc in ARGUMENTS}
    model_dir = ParameterValue(A["model_dir"], value_type=str)
    common = {"use_sim_time": ParameterValue(A["use_sim_time"], value_type=bool)}
    ros_args = ["--log-level", A["log_level"]]
    sim = Node(package="latent_vs", executable="sim_camera_node", name="sim_camera", namespace=A["namespace"],
               output="screen", ros_arguments=ros_args,
               parameters=[A["params_file"], dict(common, seed=ParameterValue(A["seed"], value_type=int))])
    encoder = Node(package="latent_vs", executable="encoder_node", name="encoder", namespace=A["namespace"],
                   output="screen", ros_arguments=ros_args,
                   parameters=[A["params_file"], dict(common, model_dir=model_dir, strict_intrinsics=ParameterValue(
                       A["strict_intrinsics"], value_type=bool))],
                   condition=IfCondition(PythonExpression(["'", A["method"], "' == 'mlvs'"])))
    controller = Node(package="latent_vs", executable="controller_node", name="controller", namespace=A["namespace"],
                      output="screen", ros_arguments=ros_args,
                      parameters=[A["params_file"], dict(common, model_dir=model_dir,
                                                         method=ParameterValue(A["method"], value_type=str))])
    return LaunchDescription(args + [sim, encoder, controller])
