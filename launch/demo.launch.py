"""The demo: a rendered camera stream (demo_camera) and moge2_node on it, optionally with RViz.

    ros2 launch moge2_ros demo.launch.py use_rviz:=true                      # bundled demo model
    ros2 launch moge2_ros demo.launch.py model:=/path/to/model.pt use_rviz:=true
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("moge2_ros")
    camera = Node(
        package="moge2_ros",
        executable="demo_camera",
        namespace="camera",
        parameters=[{"rate_hz": LaunchConfiguration("rate_hz")}],
        remappings=[("image", "image_raw")],
    )
    moge2 = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "moge2.launch.py"])),
        launch_arguments={
            "camera": "camera",
            "model": LaunchConfiguration("model"),
            # The demo camera publishes reliably on this machine: a reliable input takes every frame it sends
            # (a best-effort one loses frames to a busy CPU), as `moge2-ros demo` does.
            "input_qos": "reliable",
            "use_rviz": LaunchConfiguration("use_rviz"),
        }.items(),
    )
    return LaunchDescription([
        DeclareLaunchArgument("model", default_value="",
                              description="model.pt / .safetensors / directory / Hugging Face id; empty = the "
                                          "bundled demo model"),
        DeclareLaunchArgument("rate_hz", default_value="10.0", description="demo camera frame rate"),
        DeclareLaunchArgument("use_rviz", default_value="false", description="start RViz"),
        camera,
        moge2,
    ])
