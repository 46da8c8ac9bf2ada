"""Encoder + controller for a real robot (`ros2 launch latent_vs servo.launch.py`).

    ros2 launch latent_vs servo.launch.py namespace:=/arm1 camera_topic:=/arm1/camera/image_raw \
        command_topic:=/arm1/servo_node/delta_twist_cmds command_frame:=tool0 \
        hand_eye:="[0.0, 0.0, 0.05, 0.0, 0.0, 0.0]" goal_image:=/path/goal.png strict_intrinsics:=true

Parameters come from config/servo.yaml (or params_file:=FILE; its `/**/<node>:` keys apply
under any namespace); the launch arguments below override the ones a robot set-up has to
change (they win over the file). The encoder checks the camera_info beside camera_topic
(/arm1/camera/camera_info above) against the model's intrinsics; strict_intrinsics:=true
refuses to servo on a camera that does not match. The controller starts idle: call
`ros2 service call /arm1/controller/enable std_srvs/srv/SetBool "{data: true}"` to servo.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("namespace", "", "ROS namespace of both nodes (e.g. /arm1; empty: none)"),
    ("use_sim_time", "false", "take time from /clock (Gazebo, a bag played with --clock)"),
    ("log_level", "info", "log level of both nodes: debug, info, warn, error or fatal"),
    ("params_file", PathJoinSubstitution([FindPackageShare("latent_vs"), "config", "servo.yaml"]),
     "node parameter file (/**/<node>: ros__parameters: keys)"),
    ("model_dir", "", "model directory (empty: the package's models/default)"),
    ("camera_topic", "/camera/image_raw",
     "sensor_msgs/Image topic of the camera on the arm (a relative name is put in the namespace)"),
    ("command_topic", "/servo_node/delta_twist_cmds",
     "twist command topic (MoveIt Servo's delta-twist topic, or a velocity controller's)"),
    ("command_frame", "tool0", "frame_id of the twists: the link the twist moves, rigidly holding the camera"),
    ("hand_eye", "[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]",
     "camera pose in command_frame: [x, y, z, roll, pitch, yaw] in m and rad (floats)"),
    ("goal_image", "", "goal view image file (empty: set it later by topic or service)"),
    ("method", "mlvs", "control law: mlvs (needs the model) or dvs"),
    ("stamped", "true", "publish TwistStamped (true) or Twist (false)"),
    ("device", "cpu", "torch device of the encoder: cpu or cuda"),
    ("strict_intrinsics", "false",
     "true: the encoder publishes no latent (the controller stops) unless the camera's camera_info "
     "(beside camera_topic) matches the model's intrinsics"),
]


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
    A = {name: LaunchConfiguration(name) for name, _d, _doc in ARGUMENTS}

    def text(name):
        return ParameterValue(A[name], value_type=str)

    common = {"use_sim_time": ParameterValue(A["use_sim_time"], value_type=bool)}
    encoder = Node(
        package="latent_vs", executable="encoder_node", name="encoder", namespace=A["namespace"],
        output="screen", ros_arguments=["--log-level", A["log_level"]],
        parameters=[A["params_file"], dict(common, model_dir=text("model_dir"), device=text("device"),
                                           strict_intrinsics=ParameterValue(A["strict_intrinsics"], value_type=bool))],
        remappings=[("image", A["camera_topic"])])
    controller = Node(
        package="latent_vs", executable="controller_node", name="controller", namespace=A["namespace"],
        output="screen", ros_arguments=["--log-level", A["log_level"]],
        parameters=[A["params_file"], dict(common, model_dir=text("model_dir"), goal_image=text("goal_image"),
                                           command_frame=text("command_frame"), method=text("method"),
                                           hand_eye=A["hand_eye"],
                                           stamped=ParameterValue(A["stamped"], value_type=bool))],
        remappings=[("cmd_twist", A["command_topic"]), ("image", A["camera_topic"])])
    return LaunchDescription(args + [encoder, controller])
