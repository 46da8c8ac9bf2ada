"""Encoder + controller for a real robot (`ros2 launch latent_vs servo.launch.py`).

    ros2 launch latent_vs servo.launch.py camera_topic:=/camera/image_raw \
        command_topic:=/servo_node/delta_twist_cmds command_frame:=tool0 \
        hand_eye:="[0.0, 0.0, 0.05, 0.0, 0.0, 0.0]" goal_image:=/path/goal.png

Parameters come from config/servo.yaml (or config:=FILE); the launch arguments below
override the ones a robot set-up has to change. The controller starts idle: call
`ros2 service call /controller/enable std_srvs/srv/SetBool "{data: true}"` to servo.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("camera_topic", "/camera/image_raw", "sensor_msgs/Image topic of the camera on the arm"),
    ("command_topic", "/servo_node/delta_twist_cmds",
     "twist command topic (MoveIt Servo's delta-twist topic, or a velocity controller's)"),
    ("command_frame", "tool0", "frame_id of the twists: the link the twist moves, rigidly holding the camera"),
    ("hand_eye", "[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]",
     "camera pose in command_frame: [x, y, z, roll, pitch, yaw] in m and rad (floats)"),
    ("model_dir", "", "model directory (empty: the package's models/default)"),
    ("goal_image", "", "goal view image file (empty: set it later by topic or service)"),
    ("method", "mlvs", "control law: mlvs (needs the model) or dvs"),
    ("stamped", "true", "publish TwistStamped (true) or Twist (false)"),
    ("device", "cpu", "torch device of the encoder: cpu or cuda"),
    ("config", PathJoinSubstitution([FindPackageShare("latent_vs"), "config", "servo.yaml"]),
     "parameter file (/node: ros__parameters: shape)"),
]


def generate_launch_description():
    args = [DeclareLaunchArgument(name, default_value=default, description=doc) for name, default, doc in ARGUMENTS]
    A = {name: LaunchConfiguration(name) for name, _d, _doc in ARGUMENTS}

    def text(name):
        return ParameterValue(A[name], value_type=str)

    encoder = Node(
        package="latent_vs", executable="encoder_node", name="encoder", output="screen",
        parameters=[A["config"], {"model_dir": text("model_dir"), "device": text("device")}],
        remappings=[("image", A["camera_topic"])])
    controller = Node(
        package="latent_vs", executable="controller_node", name="controller", output="screen",
        parameters=[A["config"], {"model_dir": text("model_dir"), "goal_image": text("goal_image"),
                                  "command_frame": text("command_frame"), "method": text("method"),
                                  "hand_eye": A["hand_eye"],
                                  "stamped": ParameterValue(A["stamped"], value_type=bool)}],
        remappings=[("cmd_twist", A["command_topic"]), ("image", A["camera_topic"])])
    return LaunchDescription(args + [encoder, controller])
