"""The poster scene in Gazebo: gz sim with worlds/poster.sdf, ros_gz_bridge, encoder and
controller (`ros2 launch latent_vs gazebo.launch.py`; needs Gazebo Harmonic and ros_gz,
e.g. ROS 2 Jazzy's ros-jazzy-ros-gz). Not run on the development machines (no Gazebo).

Bridged (worlds/poster_bridge.yaml): /clock, the rig's camera image and camera_info (as
camera/image_raw, camera/camera_info) and cmd_vel -> /model/camera_rig/cmd_vel
(VelocityControl). The rig starts at the goal view: capture it with
`ros2 service call /controller/set_goal_from_current std_srvs/srv/Trigger`, move the rig
away (`gz service -s /world/poster/set_pose ...`), then enable the controller.
Parameters: config/gazebo.yaml (hand_eye maps the optical frame to Gazebo's camera_link).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

SHARE = FindPackageShare("latent_vs")
ARGUMENTS = [
    ("namespace", "", "ROS namespace of the bridge and both nodes (empty: none)"),
    ("use_sim_time", "true", "take time from Gazebo's /clock (bridged)"),
    ("log_level", "info", "log level of the nodes: debug, info, warn, error or fatal"),
    ("params_file", PathJoinSubstitution([SHARE, "config", "gazebo.yaml"]),
     "node parameter file (/**/<node>: ros__parameters: keys)"),
    ("model_dir", "", "model directory (empty: the package's models/default)"),
    ("world", PathJoinSubstitution([SHARE, "worlds", "poster.sdf"]), "SDF world file"),
    ("bridge_config", PathJoinSubstitution([SHARE, "worlds", "poster_bridge.yaml"]), "ros_gz_bridge YAML"),
    ("gz_args", "-r", "options of gz sim (-r: run at start; add -s for no GUI)"),
    ("goal_image", "", "goal view image file (empty: ~/set_goal_from_current or the goal_image topic)"),
    ("strict_intrinsics", "false",
     "true: the encoder publishes no latent unless the bridged camera_info matches the model's intrinsics"),
]


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
    A = {name: LaunchConfiguration(name) for name, _d, _doc in ARGUMENTS}
    sim_time = ParameterValue(A["use_sim_time"], value_type=bool)
    model_dir = ParameterValue(A["model_dir"], value_type=str)
    ros_args = ["--log-level", A["log_level"]]
    gz = ExecuteProcess(cmd=[["gz sim ", A["gz_args"], " ", A["world"]]], shell=True, output="screen")
    bridge = Node(package="ros_gz_bridge", executable="parameter_bridge", name="gz_bridge",
                  namespace=A["namespace"], output="screen", ros_arguments=ros_args,
                  parameters=[{"config_file": A["bridge_config"], "use_sim_time": sim_time}])
    encoder = Node(package="latent_vs", executable="encoder_node", name="encoder", namespace=A["namespace"],
                   output="screen", ros_arguments=ros_args,
                   parameters=[A["params_file"], {"use_sim_time": sim_time, "model_dir": model_dir,
                                                  "strict_intrinsics": ParameterValue(A["strict_intrinsics"],
                                                                                      value_type=bool)}],
                   remappings=[("image", "camera/image_raw"), ("camera_info", "camera/camera_info")])
    controller = Node(package="latent_vs", executable="controller_node", name="controller",
                      namespace=A["namespace"], output="screen", ros_arguments=ros_args,
                      parameters=[A["params_file"], {"use_sim_time": sim_time, "model_dir": model_dir,
                                                     "goal_image": ParameterValue(A["goal_image"], value_type=str)}],
                      remappings=[("image", "camera/image_raw"), ("cmd_twist", "cmd_vel")])
    return LaunchDescription(args + [gz, bridge, encoder, controller])
