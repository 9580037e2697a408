"""Static checks of the ROS package files: parameter docs, launch files, package manifests."""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET

import pytest
import yaml

from _paths import REPO
from moge2_ros.ros.params import PARAMS

pytestmark = pytest.mark.ros


def test_config_yaml_documents_every_parameter_with_its_default():
    doc = yaml.safe_load((REPO / "config" / "moge2.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    assert list(values) == [p.name for p in PARAMS]
    for p in PARAMS:
        assert values[p.name] == p.default, p.name
        assert type(values[p.name]) is type(p.default), p.name  # a float default must be written as a float
    text = (REPO / "config" / "moge2.yaml").read_text()
    for p in PARAMS:  # each parameter is preceded by a comment
        before = text.split(f"    {p.name}:")[0].rstrip().splitlines()[-1]
        assert before.strip().startswith("#"), p.name


@pytest.mark.parametrize("name", ["moge2.launch.py", "demo.launch.py"])
def test_launch_files_parse_and_declare_their_arguments(name):
    source = (REPO / "launch" / name).read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
                and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    used = {c.args[0].value for c in ast.walk(tree) if isinstance(c, ast.Call)
            and getattr(c.func, "id", "") == "LaunchConfiguration"}
    assert used <= declared, f"undeclared launch arguments: {used - declared}"
    if name == "moge2.launch.py":
        assert {"camera", "image", "camera_info", "params_file", "model", "backend"} <= declared


def test_ros_package_links_and_manifests():
    pkg = REPO / "ros" / "moge2_ros"
    for link in ("moge2_ros", "launch", "config", "rviz"):
        assert (pkg / link).is_symlink() and (pkg / link).resolve() == (REPO / link).resolve(), link
    manifest = ET.parse(pkg / "package.xml").getroot()
    assert manifest.findtext("name") == "moge2_ros"
    assert manifest.find("export/build_type").text == "ament_python"
    deps = {e.text for e in manifest.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "moge2_ros_msgs", "launch_ros"} <= deps
    msgs = ET.parse(REPO / "ros" / "moge2_ros_msgs" / "package.xml").getroot()
    assert msgs.findtext("name") == "moge2_ros_msgs"
    assert not (REPO / "setup.py").exists(), "a root setup.py would hide ros/ from colcon"
