"""Static checks of the ROS package files: parameter docs, launch files, package manifests."""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
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


class _Call:
    """What a stubbed launch / launch_ros class was built with."""

    built: list["_Call"] = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        _Call.built.append(self)


def _run_launch_file(name: str, monkeypatch: pytest.MonkeyPatch) -> list[_Call]:
    """Run ``generate_launch_description()`` of a launch file against recording stubs of ``launch`` and
    ``launch_ros`` (not on PyPI); returns every stub object it built, in order."""
    names = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "IncludeLaunchDescription"],
        "launch.conditions": ["IfCondition"],
        "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution"],
        "launch.launch_description_sources": ["PythonLaunchDescriptionSource"],
        "launch_ros": [],
        "launch_ros.actions": ["Node"],
        "launch_ros.parameter_descriptions": ["ParameterValue"],
        "launch_ros.substitutions": ["FindPackageShare"],
    }
    for module_name, classes in names.items():
        module = types.ModuleType(module_name)
        for cls in classes:
            setattr(module, cls, type(cls, (_Call,), {}))
        monkeypatch.setitem(sys.modules, module_name, module)
    _Call.built = []
    spec = importlib.util.spec_from_file_location(f"launch_file_{name.split('.')[0]}", REPO / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate_launch_description()
    return _Call.built


@pytest.mark.parametrize("name", ["moge2.launch.py", "demo.launch.py"])
def test_launch_files_run_with_defaults_only(name, monkeypatch):
    """Every argument has a default (no ``model:=`` needed): the model defaults to empty, which the node reads as
    the bundled demo model, and reaches the node as a string parameter."""
    built = _run_launch_file(name, monkeypatch)
    arguments = {c.args[0]: c.kwargs for c in built if type(c).__name__ == "DeclareLaunchArgument"}
    missing = [a for a, kwargs in arguments.items() if "default_value" not in kwargs]
    assert not missing, f"launch arguments without a default: {missing}"
    assert arguments["model"]["default_value"] == "" and "bundled demo model" in arguments["model"]["description"]
    if name == "moge2.launch.py":
        (node,) = [c for c in built if type(c).__name__ == "Node" and c.kwargs.get("executable") == "moge2_node"]
        overrides = node.kwargs["parameters"][1]
        assert overrides["input_qos"].args == ("input_qos",)
        assert arguments["input_qos"]["default_value"] == "sensor_data"
        for param in ("model", "onnx_path"):
            value = overrides[param]
            assert type(value).__name__ == "ParameterValue" and value.kwargs == {"value_type": str}, param
            assert value.args[0].args == (param,)
    else:
        (include,) = [c for c in built if type(c).__name__ == "IncludeLaunchDescription"]
        passed = dict(include.kwargs["launch_arguments"])
        assert passed["model"].args == ("model",)
        assert passed["input_qos"] == "reliable"  # every demo frame reaches the node (as `moge2-ros demo`)


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
