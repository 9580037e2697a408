"""Launch moge2_node beside a camera driver, or one node for several cameras, plain or managed.

    ros2 launch moge2_ros moge2.launch.py camera:=camera image:=image_raw                # bundled demo model
    ros2 launch moge2_ros moge2.launch.py camera:=camera image:=image_raw model:=/path/to/model.pt
    ros2 launch moge2_ros moge2.launch.py camera:=robot cameras:=[front,left] managed:=true \
        params_file:=$(ros2 pkg prefix moge2_ros)/share/moge2_ros/config/multi_camera.yaml

Arguments: camera (namespace of the node and of its outputs), image / camera_info (input topics, relative to
the namespace), image_transport (raw | compressed), params_file (defaults to the package's config/moge2.yaml),
model (default empty: the bundled demo model, as the node's parameter), backend, onnx_path, device, precision,
use_rviz, cameras (the node's ``cameras`` parameter: ``['']`` = one camera at the namespace ``camera``;
``[front,left]`` = one node for the cameras ``camera/front``, ``camera/left``), managed (``true``: the lifecycle
node, which waits unconfigured for a lifecycle manager, e.g. nav2's, to configure and activate it).
Outputs appear as <camera>/depth/image, <camera>/depth/camera_info, <camera>/points, ... (with cameras:
<camera>/<name>/depth/image, ...) so depth_image_proc and other REP 118 consumers connect by namespace alone.
The image / camera_info arguments remap the single camera's inputs; the cameras of a list read
<camera>/<name>/image and <camera>/<name>/camera_info (per-camera parameters: config/multi_camera.yaml).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("moge2_ros")
    args = [
        DeclareLaunchArgument("camera", default_value="camera", description="namespace of the node and its outputs"),
        DeclareLaunchArgument("image", default_value="image_raw", description="input image topic (relative to camera)"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="input camera_info topic"),
        DeclareLaunchArgument("image_transport", default_value="raw", description="raw or compressed"),
        DeclareLaunchArgument("input_qos", default_value="sensor_data",
                              description="QoS of the inputs: sensor_data (best effort) or reliable"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "moge2.yaml"]),
                              description="parameter file (see config/moge2.yaml)"),
        DeclareLaunchArgument("model", default_value="",
                              description="model.pt / .safetensors / directory / Hugging Face id; empty = the "
                                          "bundled demo model"),
        DeclareLaunchArgument("backend", default_value="torch", description="inference backend: torch or onnx"),
        DeclareLaunchArgument("onnx_path", default_value="", description="ONNX file for backend:=onnx"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("precision", default_value="auto",
                              description="auto (fp16 on CUDA, bf16 on a CPU with native bf16, else fp32), fp32, fp16 or bf16"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start RViz with the package's config"),
        DeclareLaunchArgument("cameras", default_value="['']",
                              description="camera namespaces served by one node, e.g. [front,left]; [''] = one camera "
                                          "at the namespace 'camera'"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="true: run the lifecycle (managed) node; a lifecycle manager configures "
                                          "and activates it"),
    ]
    image = LaunchConfiguration("image")
    node = Node(
        package="moge2_ros",
        executable="moge2_node",
        name="moge2_node",
        namespace=LaunchConfiguration("camera"),
        output="screen",
        arguments=[["--managed=", LaunchConfiguration("managed")]],
        parameters=[
            LaunchConfiguration("params_file"),
            {
                # strings as typed (an empty value or a path like '1200' must not be read as YAML)
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "backend": LaunchConfiguration("backend"),
                "onnx_path": ParameterValue(LaunchConfiguration("onnx_path"), value_type=str),
                "device": LaunchConfiguration("device"),
                "precision": LaunchConfiguration("precision"),
                "image_transport": LaunchConfiguration("image_transport"),
                "input_qos": LaunchConfiguration("input_qos"),
                "cameras": LaunchConfiguration("cameras"),  # YAML: [front,left] -> a string array
            },
        ],
        remappings=[
            ("image", image),
            ("image/compressed", [image, "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "rviz", "moge2.rviz"])],
        condition=IfCondition(LaunchConfiguration("use_rviz")),
    )
    return LaunchDescription([*args, node, rviz])
