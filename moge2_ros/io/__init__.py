"""File input/output helpers of the command-line tools: pure numpy + Pillow, no torch, no ROS.

* :mod:`.images`: read an image file as RGB uint8, list the images of a folder.
* :mod:`.writers`: depth as 16-bit millimetre PNG / float32 ``.npy`` / EXR, coloured depth preview, JSON.
* :mod:`.ply`: binary little-endian PLY point clouds (write and read back).
* :mod:`.intrinsics`: camera intrinsics from ``fx,fy,cx,cy`` text and JSON / YAML / text calibration files.
* :mod:`.atomic`: atomic file writes (temporary file + rename) with the mode of an ordinary new file.
"""

from moge2_ros.io.images import IMAGE_SUFFIXES, list_images, read_image_rgb
from moge2_ros.io.intrinsics import CameraIntrinsics, load_intrinsics_file, parse_intrinsics_arg
from moge2_ros.io.ply import read_ply, write_ply
from moge2_ros.io.writers import (
    colorize_depth,
    depth_to_mm_uint16,
    exr_available,
    write_depth_exr,
    write_depth_npy,
    write_depth_png_mm,
    write_json,
    write_rgb_png,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "CameraIntrinsics",
    "load_intrinsics_file",
    "parse_intrinsics_arg",
    "colorize_depth",
    "depth_to_mm_uint16",
    "exr_available",
    "list_images",
    "read_image_rgb",
    "read_ply",
    "write_depth_exr",
    "write_depth_npy",
    "write_depth_png_mm",
    "write_json",
    "write_ply",
    "write_rgb_png",
]
