"""colcon / ament_python packaging of moge2_ros.

The Python sources are the repository's ``moge2_ros/`` folder (linked here) and the metadata (version,
dependencies, console scripts) is read from the repository's ``pyproject.toml``, which pip uses; this file adds
what a ROS 2 install needs: the ament index marker, ``package.xml``, launch and config files under
``share/moge2_ros`` and executables under ``lib/moge2_ros`` (see ``setup.cfg``), so that ``ros2 run moge2_ros
moge2_node`` and ``ros2 launch moge2_ros moge2.launch.py`` work.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PACKAGE = "moge2_ros"
HERE = Path(__file__).resolve().parent
PROJECT = tomllib.loads((HERE.parent.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _share(folder: str, patterns: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    files = sorted({str(p.relative_to(HERE)) for pattern in patterns for p in (HERE / folder).glob(pattern) if p.is_file()})
    return [(f"share/{PACKAGE}/{folder}", files)] if files else []


setup(
    name=PACKAGE,
    version=PROJECT["version"],
    description=PROJECT["description"],
    license=PROJECT["license"]["text"],
    maintainer=PROJECT["authors"][0]["name"],
    maintainer_email=PROJECT["authors"][0]["email"],
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={f"{PACKAGE}.assets": ["*.safetensors"]},  # the bundled demo model
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *_share("launch", ("*.launch.py",)),
        *_share("config", ("*.yaml",)),
        *_share("rviz", ("*.rviz",)),
    ],
    zip_safe=False,
    # colcon does not install Python dependencies: they come from rosdep (package.xml) or pip.
    install_requires=[],
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in PROJECT["scripts"].items()]},
)
