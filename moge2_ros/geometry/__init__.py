"""Pure-PyTorch geometry of MoGe-2: view-plane grids, focal/shift recovery, intrinsics, projection, normals,
depth edges and robust alignment.

Everything is batched over leading dims, runs on the input's device and uses the OpenCV camera frame
(x right, y down, z forward).  "Normalised" intrinsics are in uv units (image spans [0, 1], pixel centre of
column j at ``(j + 0.5) / W``); "pixel" intrinsics follow ROS / OpenCV (``cx_px = cx_n * W - 0.5``).
"""

from moge2_ros.geometry.alignment import (
    align,
    align_affine_lstsq,
    align_depth_affine,
    align_depth_scale,
    align_points_scale,
    align_points_scale_xyz_shift,
    align_points_scale_z_shift,
    align_points_xyz_shift,
    align_points_z_shift,
)
from moge2_ros.geometry.edges import depth_edge_mask
from moge2_ros.geometry.focal_shift import (
    focal_to_normalized_intrinsics,
    fov_x_to_focal,
    recover_focal_shift,
    recover_shift_with_intrinsics,
)
from moge2_ros.geometry.intrinsics import (
    gt_focal_from_intrinsics,
    intrinsics_from_focal_center,
    intrinsics_to_fov,
    normalized_to_pixel_intrinsics,
    pixel_to_normalized_intrinsics,
    validate_intrinsics,
)
from moge2_ros.geometry.normals import normals_from_points
from moge2_ros.geometry.projection import depth_to_points, points_to_depth, project_points
from moge2_ros.geometry.resize import masked_nearest_resize
from moge2_ros.geometry.uv import normalized_view_plane_uv, pixel_center_grid

__all__ = [
    "align",
    "align_affine_lstsq",
    "align_depth_affine",
    "align_depth_scale",
    "align_points_scale",
    "align_points_scale_xyz_shift",
    "align_points_scale_z_shift",
    "align_points_xyz_shift",
    "align_points_z_shift",
    "depth_edge_mask",
    "depth_to_points",
    "focal_to_normalized_intrinsics",
    "fov_x_to_focal",
    "gt_focal_from_intrinsics",
    "intrinsics_from_focal_center",
    "intrinsics_to_fov",
    "masked_nearest_resize",
    "normalized_to_pixel_intrinsics",
    "normalized_view_plane_uv",
    "normals_from_points",
    "pixel_center_grid",
    "pixel_to_normalized_intrinsics",
    "points_to_depth",
    "project_points",
    "recover_focal_shift",
    "recover_shift_with_intrinsics",
    "validate_intrinsics",
]
