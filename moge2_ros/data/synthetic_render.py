"""Vectorised ray casting of a :class:`~moge2_ros.data.synthetic_scene.Scene` (pure torch, any device).

One ray per pixel centre: pixel ``(i, j)`` of a camera with pixel intrinsics ``K`` (ROS ``CameraInfo.K``,
pixel centres at integer coordinates) looks along ``d_cam = ((j - cx - s b) / fx, b, 1)`` with
``b = (i - cy) / fy`` in the OpenCV camera frame (x right, y down, z forward).  Since ``d_cam`` has a unit z
component, the ray parameter of the nearest hit IS the metric depth ``z``: depth is exact up to float rounding,
with no resampling and no anti-aliasing.  Rays that hit nothing see the sky (depth NaN, ``sky`` True).

Per primitive the renderer projects its bounding box into the image and only casts the rays inside that
rectangle (the box is clipped at the near plane first), which keeps the cost roughly proportional to the
pixels each object covers.  Shading: procedural texture (:data:`~moge2_ros.data.synthetic_scene.PATTERNS`,
texture periods in metres, faded to their mean where a period is under a few pixels), Lambert with one point or
directional light, hard shadows (optional; planes bound the scene and cast none), a hemisphere ambient term,
distance fog for outdoor scenes and a display gamma of 2.

The camera must be outside every solid primitive and on the free side of every plane.

Real cameras (:func:`render_distorted`): a :class:`LensCamera` holds what a ROS ``CameraInfo`` says (K, the
OpenCV lens models ``plumb_bob`` / ``rational_polynomial`` / ``equidistant``, P, binning, ROI); each pixel of the
DISTORTED image gets its undistorted ray (:func:`lens_rays`), so distorted images and their depth are exact too,
and :func:`render_rectified` renders the same pose in the rectified pinhole camera P for exact comparisons.
OpenCV (``opencv-python-headless``) is imported only there.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch

from moge2_ros.data.sample import Sample
from moge2_ros.data.synthetic_scene import PATTERNS, Scene
from moge2_ros.errors import DatasetError

__all__ = [
    "render_scene",
    "pixel_rays",
    "DISTORTION_MODELS",
    "LensCamera",
    "DistortedRender",
    "default_rectified_p",
    "lens_rays",
    "bin_image",
    "render_distorted",
    "render_rectified",
    "render_pinhole_depth",
]

_EPS = 1e-4  # minimum ray parameter of a hit (metres along a unit-z ray)
_INF = math.inf
# Mean of each pattern's mix factor, the value a texture fades to when its period is below a few pixels.
_PATTERN_MEAN = (0.0, 0.5, 0.5, 0.5, 0.25, 0.3)
assert len(_PATTERN_MEAN) == len(PATTERNS)

Vec = tuple  # (x, y, z) of tensors or floats


def pixel_rays(intrinsics: np.ndarray, width: int, height: int, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera-frame ray directions through the pixel centres, with unit z.

    Args:
        intrinsics: ``(3, 3)`` pixel K ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``.

    Returns:
        ``(dx, dy, dz)``, each ``(height, width)``; ``dz`` is all ones.
    """
    k = np.asarray(intrinsics, dtype=np.float64)
    fx, s, cx, fy, cy = k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2]
    rows = (torch.arange(height, dtype=torch.float64, device=device) - cy) / fy
    b = rows[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float64, device=device)[None, :]
    a = (cols - cx - s * b) / fx
    return a.to(dtype), b.to(dtype).contiguous(), torch.ones((height, width), dtype=dtype, device=device)


# ----------------------------------------------------------------------------------------------- intersections
# Every function takes origins ``o`` (floats or tensors) and directions ``d`` (tensors) as 3-tuples of components
# and returns the ray parameter of the first hit (``inf`` for a miss) and what shading needs.


def _plane_hit(o: Vec, d: Vec, n: tuple[float, float, float], dist: float) -> torch.Tensor:
    denom = n[0] * d[0] + n[1] * d[1] + n[2] * d[2]
    num = dist - (n[0] * o[0] + n[1] * o[1] + n[2] * o[2])
    t = num / torch.where(denom < -1e-12, denom, torch.full_like(denom, -1e-12))
    return torch.where((denom < -1e-12) & (t > _EPS), t, _INF)


def _box_local(o: Vec, d: Vec, centre, yaw: float) -> tuple[Vec, Vec, float, float]:
    c, s = math.cos(yaw), math.sin(yaw)
    ox, oy, oz = o[0] - centre[0], o[1] - centre[1], o[2] - centre[2]
    lo = (c * ox - s * oz, oy, s * ox + c * oz)
    ld = (c * d[0] - s * d[2], d[1], s * d[0] + c * d[2])
    return lo, ld, c, s


def _box_hit(o: Vec, d: Vec, centre, half, yaw: float) -> torch.Tensor:
    """Slab test in the box frame: ray parameter of the entry point (``inf`` for a miss)."""
    lo, ld, _, _ = _box_local(o, d, centre, yaw)
    t_near = t_far = None
    for k in range(3):
        dk = ld[k]
        inv = 1.0 / torch.where(dk.abs() < 1e-12, torch.full_like(dk, 1e-12), dk)
        t1 = (-half[k] - lo[k]) * inv
        t2 = (half[k] - lo[k]) * inv
        near, far = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_near = near if t_near is None else torch.maximum(t_near, near)
        t_far = far if t_far is None else torch.minimum(t_far, far)
    return torch.where((t_far >= t_near) & (t_near > _EPS), t_near, _INF)


def _sphere_hit(o: Vec, d: Vec, centre, radius: float) -> torch.Tensor:
    oc = (o[0] - centre[0], o[1] - centre[1], o[2] - centre[2])
    a = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    b = oc[0] * d[0] + oc[1] * d[1] + oc[2] * d[2]
    c = oc[0] * oc[0] + oc[1] * oc[1] + oc[2] * oc[2] - radius * radius
    disc = b * b - a * c
    root = torch.sqrt(torch.clamp(disc, min=0.0))
    t1 = (-b - root) / a
    t2 = (-b + root) / a
    t = torch.where(t1 > _EPS, t1, torch.where(t2 > _EPS, t2, _INF))
    return torch.where(disc >= 0, t, _INF)


def _cylinder_hit(o: Vec, d: Vec, axis_xz, radius: float, y_top: float, y_bottom: float) -> torch.Tensor:
    """Vertical cylinder with caps: ray parameter of the first hit (``inf`` for a miss)."""
    ox, oz = o[0] - axis_xz[0], o[2] - axis_xz[1]
    a = d[0] * d[0] + d[2] * d[2]
    b = ox * d[0] + oz * d[2]
    c = ox * ox + oz * oz - radius * radius
    disc = b * b - a * c
    safe_a = torch.where(a > 1e-12, a, torch.ones_like(a))
    t_side = (-b - torch.sqrt(torch.clamp(disc, min=0.0))) / safe_a
    y_side = o[1] + t_side * d[1]
    ok = (disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (y_side >= y_top) & (y_side <= y_bottom)
    t = torch.where(ok, t_side, _INF)
    inv_dy = 1.0 / torch.where(d[1].abs() > 1e-12, d[1], torch.full_like(d[1], 1e-12))
    for y_cap in (y_top, y_bottom):
        t_cap = (y_cap - o[1]) * inv_dy
        px, pz = ox + t_cap * d[0], oz + t_cap * d[2]
        ok = (t_cap > _EPS) & (px * px + pz * pz <= radius * radius)
        t = torch.where(ok, torch.minimum(t, t_cap), t)
    return t


# ----------------------------------------------------------------------------------------------------- culling


def _aabb_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


_BOX_EDGES = [(a, a | bit) for bit in (4, 2, 1) for a in range(8) if not a & bit]  # corners of _aabb_corners


def _screen_rect(corners_w: np.ndarray, pose: np.ndarray, k: np.ndarray, width: int, height: int
                 ) -> tuple[int, int, int, int] | None:
    """Pixel rectangle ``(i0, i1, j0, j1)`` (end exclusive) covering the projection of a box given by its 8
    corners (in :func:`_aabb_corners` order), or None when no part of it in front of the camera projects into
    the image.  The box is clipped at the near plane ``z = _EPS`` first (corners behind it are replaced by the
    points where the box edges cross it), so boxes reaching behind the camera still get tight rectangles."""
    rot, centre = pose[:3, :3], pose[:3, 3]
    pc = (corners_w - centre) @ rot  # world -> camera: R^T (p - t)
    z = pc[:, 2]
    front = z > _EPS
    if not front.any():
        return None
    pts = [pc[front]]
    if not front.all():
        for a, b in _BOX_EDGES:
            if front[a] != front[b]:
                w = (_EPS - z[a]) / (z[b] - z[a])
                pts.append((pc[a] + w * (pc[b] - pc[a]))[None])
    q = np.concatenate(pts)
    qz = np.maximum(q[:, 2], _EPS)
    b = q[:, 1] / qz
    u = k[0, 0] * q[:, 0] / qz + k[0, 1] * b + k[0, 2]
    v = k[1, 1] * b + k[1, 2]
    j0, j1 = max(0, math.floor(u.min()) - 1), min(width, math.ceil(u.max()) + 2)
    i0, i1 = max(0, math.floor(v.min()) - 1), min(height, math.ceil(v.max()) + 2)
    if j0 >= j1 or i0 >= i1:
        return None
    return i0, i1, j0, j1


# ---------------------------------------------------------------------------------------------------- textures


def _hash(ix: torch.Tensor, iy: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Deterministic pseudo-random values in [0, 1) of integer lattice points (classic sine hash)."""
    x = torch.sin(ix * 12.9898 + iy * 78.233 + seed * 37.719) * 43758.5453
    return x - torch.floor(x)


def _value_noise(x: torch.Tensor, y: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Smooth value noise in [0, 1] (bilinear interpolation of lattice hashes with a smoothstep)."""
    fx, fy = torch.floor(x), torch.floor(y)
    tx, ty = x - fx, y - fy
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    h00, h10 = _hash(fx, fy, seed), _hash(fx + 1, fy, seed)
    h01, h11 = _hash(fx, fy + 1, seed), _hash(fx + 1, fy + 1, seed)
    top = h00 + (h10 - h00) * tx
    bottom = h01 + (h11 - h01) * tx
    return top + (bottom - top) * ty


# ---------------------------------------------------------------------------------------------------- renderer


def _check_inputs(scene: Scene, intrinsics: np.ndarray, pose: np.ndarray, width: int, height: int) -> tuple:
    if not isinstance(scene, Scene):
        raise DatasetError(f"render_scene: expected a Scene, found {type(scene).__name__}")
    scene.validate()
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3) or not np.isfinite(k).all() or not (k[0, 0] > 0 and k[1, 1] > 0):
        raise DatasetError(f"render_scene: intrinsics must be a finite (3, 3) pixel K with fx, fy > 0, found {k}")
    if not (k[1, 0] == 0 and k[2, 0] == 0 and k[2, 1] == 0 and k[2, 2] == 1):
        raise DatasetError(f"render_scene: intrinsics must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], found {k}")
    p = np.asarray(pose, dtype=np.float64)
    if p.shape != (4, 4) or not np.isfinite(p).all():
        raise DatasetError(f"render_scene: pose must be a finite (4, 4) camera-to-world matrix, found {p.shape}")
    rot = p[:3, :3]
    if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-6) or np.linalg.det(rot) < 0:
        raise DatasetError("render_scene: pose[:3, :3] must be a rotation matrix")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 2 for v in (width, height)):
        raise DatasetError(f"render_scene: width and height must be ints >= 2, found {width!r} x {height!r}")
    return k, p




def _solid_aabbs(scene: Scene) -> list[tuple[np.ndarray, np.ndarray]]:
    """World axis-aligned bounds ``(lo, hi)`` of every box, sphere and cylinder, in primitive order."""
    out = []
    signs = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=np.float64)
    for centre, half, yaw in zip(scene.box_centre, scene.box_half, scene.box_yaw):
        c, s = math.cos(yaw), math.sin(yaw)
        axes = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # rows: world directions of the local axes
        corners = centre + (signs * half) @ axes
        out.append((corners.min(axis=0), corners.max(axis=0)))
    for centre, radius in zip(scene.sphere_centre, scene.sphere_radius):
        out.append((centre - radius, centre + radius))
    for axis_xz, radius, (y_top, y_bottom) in zip(scene.cyl_centre, scene.cyl_radius, scene.cyl_y):
        out.append((np.array([axis_xz[0] - radius, y_top, axis_xz[1] - radius]),
                    np.array([axis_xz[0] + radius, y_bottom, axis_xz[1] + radius])))
    return out


def _solid_hit(scene: Scene, index: int, o: Vec, d: Vec) -> torch.Tensor:
    """Ray parameter of the first hit with solid primitive ``index`` (0-based among boxes, spheres, cylinders)."""
    nb, ns = len(scene.box_centre), len(scene.sphere_centre)
    if index < nb:
        return _box_hit(o, d, scene.box_centre[index], scene.box_half[index], float(scene.box_yaw[index]))
    if index < nb + ns:
        i = index - nb
        return _sphere_hit(o, d, scene.sphere_centre[i], float(scene.sphere_radius[i]))
    i = index - nb - ns
    return _cylinder_hit(o, d, scene.cyl_centre[i], float(scene.cyl_radius[i]), float(scene.cyl_y[i, 0]),
                         float(scene.cyl_y[i, 1]))


def render_scene(
    scene: Scene,
    intrinsics: np.ndarray,
    pose: np.ndarray,
    width: int,
    height: int,
    *,
    device: torch.device | str = "cpu",
    shadows: bool = True,
    source: str = "synthetic",
    meta: dict | None = None,
) -> Sample:
    """Ray-cast one view of ``scene``.

    Args:
        scene: the primitives (world frame y down, metres).
        intrinsics: ``(3, 3)`` pixel K (ROS convention, pixel centres at integer coordinates).
        pose: ``(4, 4)`` camera-to-world transform of the OpenCV camera frame (see
            :func:`~moge2_ros.data.synthetic_scene.camera_pose`).
        width, height: image size in pixels.
        device: torch device that does the work (results come back as numpy arrays).
        shadows: cast shadow rays towards the light.
        source, meta: copied into the Sample (``meta`` gains ``family`` and ``pose`` unless given).

    Returns:
        A label-type "A", metric :class:`Sample`: ``image`` (H, W, 3) uint8, ``depth`` (H, W) float32 z in metres
        (NaN on sky), ``normal`` (H, W, 3) float32 unit normals in the camera frame facing the camera (NaN on
        sky), ``sky`` (H, W) bool, ``intrinsics`` = ``intrinsics`` (float64 copy).

    Raises:
        DatasetError: malformed scene, intrinsics, pose or size.
    """
    k, p = _check_inputs(scene, intrinsics, pose, width, height)
    width, height = int(width), int(height)
    dtype = torch.float32
    rays = pixel_rays(k, width, height, dtype, device)
    t_best, hit, image, normal_cam = _cast(
        scene, k, p, rays, lambda lo, hi, origin, dw: _screen_rect(_aabb_corners(lo, hi), p, k, width, height),
        shadows)
    out_meta = dict(meta or {})
    out_meta.setdefault("family", scene.family)
    out_meta.setdefault("pose", p.copy())
    return Sample(
        image=image.cpu().numpy(),
        depth=torch.where(hit, t_best, torch.nan).cpu().numpy(),
        intrinsics=k.copy(),
        sky=(~hit).cpu().numpy(),  # rays that leave the scene: no geometry (closed rooms have none)
        normal=normal_cam.cpu().numpy(),
        label_type="A",
        is_metric=True,
        source=source,
        meta=out_meta,
    )


def _cast(scene: Scene, k: np.ndarray, p: np.ndarray, rays: tuple, rect_of, shadows: bool) -> tuple:
    """Primary visibility and shading of camera-frame rays ``(dx, dy, dz)`` (``(H, W)`` each) from pose ``p``.

    ``rect_of(lo, hi, origin, dw)`` gives the pixel rectangle ``(i0, i1, j0, j1)`` whose rays may hit a solid with
    world bounds ``(lo, hi)``, or None.  ``k`` sets the texture fade (pixels per metre at unit ray parameter).

    Returns:
        ``(t_best, hit, image, normal_cam)``: nearest ray parameter (``inf`` on a miss), hit mask, ``(H, W, 3)``
        uint8 colours and camera-frame normals.
    """
    dcx, dcy, dcz = rays
    height, width = dcx.shape
    dtype, device = dcx.dtype, dcx.device
    rot, cam = p[:3, :3], p[:3, 3]
    r = [[float(v) for v in row] for row in rot]
    dw = tuple(r[a][0] * dcx + r[a][1] * dcy + r[a][2] * dcz for a in range(3))  # world directions (H, W) each
    origin = tuple(float(v) for v in cam)

    # Primary visibility: nearest ray parameter and primitive id per pixel.
    t_best = torch.full((height, width), _INF, dtype=dtype, device=device)
    prim = torch.full((height, width), -1, dtype=torch.long, device=device)
    for index, plane in enumerate(scene.planes):
        t = _plane_hit(origin, dw, tuple(float(v) for v in plane[:3]), float(plane[3]))
        prim.masked_fill_(t < t_best, index)
        t_best = torch.minimum(t_best, t)
    aabbs = _solid_aabbs(scene)
    for solid, (lo, hi) in enumerate(aabbs):
        rect = rect_of(lo, hi, origin, dw)
        if rect is None:
            continue
        i0, i1, j0, j1 = rect
        t = _solid_hit(scene, solid, origin, tuple(c[i0:i1, j0:j1] for c in dw))
        cur = t_best[i0:i1, j0:j1]
        prim[i0:i1, j0:j1].masked_fill_(t < cur, len(scene.planes) + solid)
        t_best[i0:i1, j0:j1] = torch.minimum(cur, t)

    hit = torch.isfinite(t_best)
    image, normal_cam = _shade(scene, k, rot, origin, dw, t_best, prim, hit, aabbs, shadows)
    return t_best, hit, image, normal_cam


def _gather(values: np.ndarray, index: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(values), dtype=dtype, device=index.device)[index]


def _surface(scene: Scene, pid: torch.Tensor, pts: Vec) -> tuple[torch.Tensor, torch.Tensor]:
    """World normals ``(3, M)`` (outward for solids, towards free space for planes; not yet oriented to the
    camera) and texture coordinates ``(2, M)`` in metres of hit points ``pts`` on primitives ``pid`` (``(M,)``)."""
    normal = torch.zeros((3,) + pid.shape, dtype=pts[0].dtype, device=pid.device)
    uv = torch.zeros((2,) + pid.shape, dtype=pts[0].dtype, device=pid.device)
    n_planes, n_boxes, n_spheres = len(scene.planes), len(scene.box_centre), len(scene.sphere_centre)
    bounds = np.cumsum([0, n_planes, n_boxes, n_spheres, len(scene.cyl_centre)])
    for kind in range(4):
        lo, hi = int(bounds[kind]), int(bounds[kind + 1])
        if lo == hi:
            continue
        inside = (pid >= lo) & (pid < hi)
        if bool(inside.all()):
            sel = slice(None)
        else:
            sel = inside.nonzero().squeeze(1)
            if sel.numel() == 0:
                continue
        j = pid[sel] - lo
        x, y, z = (c[sel] for c in pts)
        if kind == 0:  # planes: floor-like ones use (x, z), walls a horizontal tangent and y
            n = _gather(scene.planes[:, :3], j).T
            tang = torch.sqrt(n[0] * n[0] + n[2] * n[2]).clamp_min(1e-12)
            floor = n[1].abs() > 0.9
            u = torch.where(floor, x, (n[2] * x - n[0] * z) / tang)
            v = torch.where(floor, z, y)
        elif kind == 1:  # boxes: the face is the local axis where |p_local| / half is largest
            centre, half = _gather(scene.box_centre, j), _gather(scene.box_half, j)
            yaw = _gather(scene.box_yaw, j)
            c, s = torch.cos(yaw), torch.sin(yaw)
            ox, oy, oz = x - centre[:, 0], y - centre[:, 1], z - centre[:, 2]
            local = torch.stack([c * ox - s * oz, oy, s * ox + c * oz])  # (3, M)
            ratio = local.abs() / half.T
            axis = torch.where(ratio[2] > ratio[0], 2, 0)
            axis = torch.where(ratio[1] > torch.maximum(ratio[0], ratio[2]), 1, axis)
            nl = [torch.where(axis == a, torch.sign(local[a]), 0.0) for a in range(3)]
            n = torch.stack([c * nl[0] + s * nl[2], nl[1], -s * nl[0] + c * nl[2]])
            shifted = local + half.T  # texture origin at the box corner
            u = torch.where(axis == 0, shifted[2], shifted[0])
            v = torch.where(axis == 1, shifted[2], shifted[1])
        elif kind == 2:  # spheres
            centre, radius = _gather(scene.sphere_centre, j), _gather(scene.sphere_radius, j)
            n = torch.stack([x - centre[:, 0], y - centre[:, 1], z - centre[:, 2]]) / radius
            n = n / torch.sqrt((n * n).sum(0)).clamp_min(1e-12)
            u = torch.atan2(n[0], n[2]) * radius
            v = torch.acos(n[1].clamp(-1.0, 1.0)) * radius
        else:  # vertical cylinders: side or cap, whichever surface the point is closer to
            axis_xz, radius = _gather(scene.cyl_centre, j), _gather(scene.cyl_radius, j)
            ys = _gather(scene.cyl_y, j)
            px, pz = x - axis_xz[:, 0], z - axis_xz[:, 1]
            radial = torch.sqrt(px * px + pz * pz).clamp_min(1e-12)
            d_top, d_bottom = (y - ys[:, 0]).abs(), (y - ys[:, 1]).abs()
            side = (radial - radius).abs() <= torch.minimum(d_top, d_bottom)
            cap_sign = torch.where(d_top < d_bottom, -1.0, 1.0)
            n = torch.stack([torch.where(side, px / radial, 0.0), torch.where(side, 0.0, cap_sign),
                             torch.where(side, pz / radial, 0.0)])
            u = torch.where(side, torch.atan2(px, pz) * radius, px)
            v = torch.where(side, y, pz)
        normal[:, sel] = n
        uv[0, sel] = u
        uv[1, sel] = v
    return normal, uv


def _texture(scene: Scene, pid: torch.Tensor, uv: torch.Tensor, period_px: torch.Tensor) -> torch.Tensor:
    """Albedo ``(M, 3)`` (linear RGB) of hit points with texture coordinates ``uv`` (``(2, M)``, metres)."""
    pattern = _gather(scene.pattern, pid, torch.long)
    scale = _gather(scene.tex_scale, pid)
    seed = _gather(scene.tex_phase, pid)
    x, y = uv[0] / scale, uv[1] / scale
    m = torch.zeros_like(x)
    for index, name in enumerate(PATTERNS):
        if name == "solid":
            continue
        sel = (pattern == index).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        px, py, ps = x[sel], y[sel], seed[sel]
        fx, fy = torch.floor(px), torch.floor(py)
        if name == "checker":
            value = torch.remainder(fx + fy, 2.0)
        elif name == "stripes":
            value = torch.remainder(fx, 2.0)
        elif name == "noise":
            value = 0.65 * _value_noise(px * 2.0, py * 2.0, ps) + 0.35 * _value_noise(px * 8.0 + 13.0, py * 8.0, ps)
        elif name == "bricks":
            row = torch.floor(py * 3.0)
            bx = px * 1.5 + 0.5 * torch.remainder(row, 2.0)
            mortar = ((py * 3.0 - row) < 0.12) | ((bx - torch.floor(bx)) < 0.06)
            value = torch.where(mortar, 1.0, 0.3 * _hash(torch.floor(bx), row, ps))
        else:  # windows: a grid of panes on a facade
            wx, wy = px - fx, py - fy
            pane = (wx > 0.25) & (wx < 0.75) & (wy > 0.25) & (wy < 0.8)
            value = torch.where(pane, 0.75 + 0.25 * _hash(fx, fy, ps), 0.0)
        m[sel] = value
    # Fade patterns whose period covers fewer than ~2 pixels towards their mean (cheap anti-aliasing).
    fade = torch.clamp((scale * period_px - 1.5) / 3.0, 0.0, 1.0)
    mean = torch.as_tensor(_PATTERN_MEAN, dtype=x.dtype, device=x.device)[pattern]
    m = (mean + (m - mean) * fade)[:, None]
    grime = 0.9 + 0.2 * _value_noise(x * 4.0 + 5.0, y * 4.0 + 3.0, seed)
    col_a, col_b = _gather(scene.color_a, pid), _gather(scene.color_b, pid)
    return (col_a * (1 - m) + col_b * m) * grime[:, None]


def _shade(scene: Scene, k: np.ndarray, rot: np.ndarray, origin: tuple, dw: Vec, t_best: torch.Tensor,
           prim: torch.Tensor, hit: torch.Tensor, aabbs: list, shadows: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Textured, lit colours (``(H, W, 3)`` uint8) and camera-frame unit normals (``(H, W, 3)`` float32, facing
    the camera, NaN on sky)."""
    dtype, device = t_best.dtype, t_best.device
    height, width = t_best.shape
    length = torch.sqrt(dw[0] * dw[0] + dw[1] * dw[1] + dw[2] * dw[2])
    up = torch.clamp(-dw[1] / length, 0.0, 1.0).sqrt()[..., None]
    zenith = torch.as_tensor(scene.sky_zenith, dtype=dtype, device=device)
    horizon = torch.as_tensor(scene.sky_horizon, dtype=dtype, device=device)
    colour = (horizon * (1 - up) + zenith * up).reshape(-1, 3)  # sky everywhere, surfaces overwritten below
    normal_cam = torch.full((height * width, 3), torch.nan, dtype=dtype, device=device)

    everything = bool(hit.all())  # closed rooms: no compaction needed
    idx = slice(None) if everything else hit.reshape(-1).nonzero().squeeze(1)
    if everything or idx.numel() > 0:
        pid = prim.reshape(-1)[idx]
        t = t_best.reshape(-1)[idx]
        d = tuple(c.reshape(-1)[idx] for c in dw)
        pts = tuple(origin[c] + t * d[c] for c in range(3))
        n, uv = _surface(scene, pid, pts)
        n = torch.where((n * torch.stack(d)).sum(0) > 0, -n, n)  # face the camera
        r = [[float(v) for v in row] for row in rot]
        n_cam = torch.stack([r[0][c] * n[0] + r[1][c] * n[1] + r[2][c] * n[2] for c in range(3)], dim=-1)
        normal_cam[idx] = n_cam / torch.sqrt((n_cam * n_cam).sum(-1, keepdim=True)).clamp_min(1e-12)

        albedo = _texture(scene, pid, uv, float(min(k[0, 0], k[1, 1])) / t)
        if scene.light_direction is not None:
            to_light = tuple(torch.full_like(t, float(v)) for v in scene.light_direction)
            light_dist = torch.full_like(t, _INF)
            intensity = torch.ones_like(t)
        else:
            vec = [float(scene.light_position[c]) - pts[c] for c in range(3)]
            light_dist = torch.sqrt(vec[0] * vec[0] + vec[1] * vec[1] + vec[2] * vec[2]).clamp_min(1e-6)
            to_light = tuple(v / light_dist for v in vec)
            intensity = 1.6 / (1.0 + (light_dist * 0.25) ** 2)
        lambert = torch.clamp(n[0] * to_light[0] + n[1] * to_light[1] + n[2] * to_light[2], min=0.0)
        if shadows:
            lit = (lambert > 0).nonzero().squeeze(1)
            if lit.numel() > 0:
                offset = 1e-3 + 1e-4 * t[lit]
                so = tuple(pts[c][lit] + n[c][lit] * offset for c in range(3))
                sd = tuple(to_light[c][lit] for c in range(3))
                blocked = _occluded(scene, aabbs, so, sd, light_dist[lit])
                lambert[lit] = torch.where(blocked, 0.0, lambert[lit])
        ambient = scene.ambient * (0.8 - 0.2 * n[1])  # hemisphere light: up-facing (n_y < 0) is brighter
        rgb = albedo * (ambient + (1.0 - scene.ambient) * lambert * intensity)[:, None]
        if math.isfinite(scene.fog_distance):
            keep = torch.exp(-(t * length.reshape(-1)[idx]) / scene.fog_distance)[:, None]
            rgb = rgb * keep + horizon * (1 - keep)
        colour[idx] = rgb
    # Display gamma 2 (a square root: cheaper than a power and close to sRGB's 2.2).
    image = torch.round(torch.sqrt(torch.clamp(colour, 0.0, 1.0)) * 255.0).to(torch.uint8)
    return image.reshape(height, width, 3), normal_cam.reshape(height, width, 3)


def _occluded(scene: Scene, aabbs: list, o: Vec, d: Vec, max_t: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: the shadow ray ``o + t d`` hits a solid primitive with ``t < max_t``.

    Planes bound the scene and are never tested.  Rays are culled per primitive with its bounding box: for a
    directional light the origins are sorted by one coordinate across the light, so the rays that can pass the
    box's "shadow rectangle" are a contiguous range found by binary search, then filtered by the other two
    coordinates; for a point light, rays whose segment's bounding box misses the primitive's are skipped.
    """
    if scene.light_direction is None:
        return _occluded_point(scene, aabbs, o, d, max_t)
    ldir = np.asarray(scene.light_direction, dtype=np.float64)
    e1 = np.cross(ldir, [1.0, 0.0, 0.0] if abs(ldir[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    basis = np.stack([e1, np.cross(ldir, e1), ldir])  # rows: two directions across the light, then along it
    proj = [float(b[0]) * o[0] + float(b[1]) * o[1] + float(b[2]) * o[2] for b in basis]
    key, order = torch.sort(proj[0])
    p1, p2 = proj[1][order], proj[2][order]
    os_, ds_ = tuple(c[order] for c in o), tuple(c[order] for c in d)
    blocked = torch.zeros_like(max_t, dtype=torch.bool)  # in sorted order
    for solid, (lo, hi) in enumerate(aabbs):
        q = _aabb_corners(lo, hi) @ basis.T  # (8, 3) in basis coordinates
        qlo, qhi = q.min(axis=0), q.max(axis=0)
        bounds = torch.tensor([qlo[0], qhi[0]], dtype=key.dtype, device=key.device)
        start, stop = (int(v) for v in torch.searchsorted(key, bounds, right=False))
        stop = int(torch.searchsorted(key, bounds[1:], right=True)[0])
        if stop <= start:
            continue
        cand = ((p1[start:stop] >= qlo[1]) & (p1[start:stop] <= qhi[1]) & (p2[start:stop] <= qhi[2])
                & ~blocked[start:stop])
        sel = cand.nonzero().squeeze(1) + start
        if sel.numel() == 0:
            continue
        t = _solid_hit(scene, solid, tuple(c[sel] for c in os_), tuple(c[sel] for c in ds_))
        blocked[sel] = t < max_t[sel]  # candidates were not blocked before
    out = torch.empty_like(blocked)
    out[order] = blocked
    return out


def _occluded_point(scene: Scene, aabbs: list, o: Vec, d: Vec, max_t: torch.Tensor) -> torch.Tensor:
    """:func:`_occluded` for a point light (segment-box culling)."""
    blocked = torch.zeros_like(max_t, dtype=torch.bool)
    light = [float(v) for v in scene.light_position]
    for solid, (lo, hi) in enumerate(aabbs):
        cand = ~blocked
        for a in range(3):
            if light[a] > hi[a]:
                cand &= o[a] <= float(hi[a])
            if light[a] < lo[a]:
                cand &= o[a] >= float(lo[a])
        sel = cand.nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        t = _solid_hit(scene, solid, tuple(c[sel] for c in o), tuple(c[sel] for c in d))
        blocked[sel] = t < max_t[sel]
    return blocked


# ------------------------------------------------------------------------------------------- distorted cameras
# Real cameras: the OpenCV lens models of a ROS CameraInfo, binning and a region of interest.  The ray caster needs
# the ray of each pixel of the DISTORTED image, i.e. the undistorted direction of each pixel centre; OpenCV
# (imported lazily: the optional ``opencv-python-headless``) gives it for plumb_bob / rational_polynomial, and the
# equidistant fisheye angle is solved here directly so that rays at or beyond 90 degrees off axis are exact too.

#: Lens models of ``sensor_msgs/CameraInfo.distortion_model`` that :func:`render_distorted` renders, with the
#: numbers of coefficients ``d`` each accepts (OpenCV's orders).
DISTORTION_MODELS: dict[str, tuple[int, ...]] = {
    "plumb_bob": (4, 5),                 # k1, k2, p1, p2[, k3]
    "rational_polynomial": (8,),         # k1, k2, p1, p2, k3, k4, k5, k6
    "equidistant": (4,),                 # k1..k4 of theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8)
}
_Z_UNIT_MIN_COS = 0.1  # rays with cos(angle off axis) >= this get unit z (ray parameter = depth), others unit length


@dataclass(eq=False)
class LensCamera:
    """A camera as a ROS ``sensor_msgs/CameraInfo`` describes it (``image_geometry`` semantics).

    Attributes:
        width, height: full sensor resolution, pixels (what K, D and P refer to).
        k: ``(3, 3)`` pixel K of the full-resolution sensor (pixel centres at integer coordinates).
        d: distortion coefficients in OpenCV order (see :data:`DISTORTION_MODELS`); empty or all zero with
            ``plumb_bob`` / ``rational_polynomial`` is a pinhole.
        distortion_model: ``plumb_bob``, ``rational_polynomial`` or ``equidistant``.
        p: ``(3, 4)`` projection of the rectified camera (None: :func:`default_rectified_p`).
        binning_x, binning_y: binning factors (0 and 1 both mean none).
        roi: ``(x_offset, y_offset, width, height)`` in full-resolution pixels; all zero = the full sensor.
    """

    width: int
    height: int
    k: np.ndarray
    d: tuple = ()
    distortion_model: str = "plumb_bob"
    p: np.ndarray | None = None
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        if self.distortion_model not in DISTORTION_MODELS:
            raise DatasetError(f"LensCamera: distortion_model must be one of {', '.join(DISTORTION_MODELS)}, "
                               f"found {self.distortion_model!r}")
        self.d = tuple(float(v) for v in self.d)
        if self.d and len(self.d) not in DISTORTION_MODELS[self.distortion_model]:
            raise DatasetError(f"LensCamera: {self.distortion_model} takes {DISTORTION_MODELS[self.distortion_model]} "
                               f"coefficients, found {len(self.d)}")
        if not all(math.isfinite(v) for v in self.d):
            raise DatasetError(f"LensCamera: non-finite distortion coefficients {self.d}")
        if not all(isinstance(v, numbers.Integral) and v >= 2 for v in (self.width, self.height)):
            raise DatasetError(f"LensCamera: width and height must be ints >= 2, found {self.width}x{self.height}")
        self.k = np.array(self.k, dtype=np.float64).reshape(3, 3)
        if not (np.isfinite(self.k).all() and self.k[0, 0] > 0 and self.k[1, 1] > 0 and self.k[1, 0] == 0
                and self.k[2, 0] == 0 and self.k[2, 1] == 0 and self.k[2, 2] == 1):
            raise DatasetError(f"LensCamera: k must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], found {self.k}")
        bx, by = self.bin_factors
        x0, y0, rw, rh = (int(v) for v in self.roi)
        if (rw, rh) == (0, 0) and (x0, y0) == (0, 0):
            rw, rh = self.width, self.height
        if not (0 <= x0 and 0 <= y0 and rw > 0 and rh > 0 and x0 + rw <= self.width and y0 + rh <= self.height):
            raise DatasetError(f"LensCamera: roi {self.roi} is not inside the {self.width}x{self.height} sensor")
        if rw % bx or rh % by or rw // bx < 2 or rh // by < 2:
            raise DatasetError(f"LensCamera: roi size {rw}x{rh} must be a multiple of the binning {bx}x{by}")
        self.roi = (x0, y0, rw, rh) if (rw, rh) != (self.width, self.height) or (x0, y0) != (0, 0) else (0, 0, 0, 0)
        self.p = default_rectified_p(self) if self.p is None else np.array(self.p, dtype=np.float64).reshape(3, 4)

    @property
    def bin_factors(self) -> tuple[int, int]:
        """``(bx, by)`` with 0 read as 1."""
        return max(1, int(self.binning_x)), max(1, int(self.binning_y))

    @property
    def roi_box(self) -> tuple[int, int, int, int]:
        """``(x_offset, y_offset, width, height)`` of the captured region, full-resolution pixels."""
        return self.roi if self.roi[2] else (0, 0, self.width, self.height)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the image the camera sends (the ROI, binned)."""
        bx, by = self.bin_factors
        return self.roi_box[2] // bx, self.roi_box[3] // by

    @property
    def is_pinhole(self) -> bool:
        """No distortion: a plumb_bob / rational_polynomial camera with all coefficients zero."""
        return self.distortion_model != "equidistant" and not any(self.d)

    def raw_k(self) -> np.ndarray:
        """K of the image the camera sends (ROI offset removed, divided by the binning; image_geometry)."""
        return _adjust(self.k, self.roi_box, self.bin_factors)

    def rectified(self) -> tuple[np.ndarray, int, int]:
        """``(K, width, height)`` of the rectified pinhole image of the image the camera sends: ``P[:3, :3]``
        with the ROI offset removed and divided by the binning (image_geometry), at the image's size."""
        width, height = self.image_size
        return _adjust(self.p[:, :3], self.roi_box, self.bin_factors), width, height

    def camera_info(self, frame_id: str = "camera_optical_frame") -> SimpleNamespace:
        """The ``sensor_msgs/CameraInfo`` fields (ROS 2 lower-case names; lists of floats) of this camera."""
        x0, y0, rw, rh = self.roi
        return SimpleNamespace(
            header=SimpleNamespace(frame_id=frame_id, stamp=SimpleNamespace(sec=0, nanosec=0)),
            width=int(self.width), height=int(self.height), distortion_model=self.distortion_model,
            d=list(self.d), k=[float(v) for v in self.k.reshape(-1)], r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p=[float(v) for v in self.p.reshape(-1)], binning_x=int(self.binning_x), binning_y=int(self.binning_y),
            roi=SimpleNamespace(x_offset=x0, y_offset=y0, width=rw, height=rh, do_rectify=bool(rw)),
        )


def _adjust(k: np.ndarray, roi: tuple[int, int, int, int], bins: tuple[int, int]) -> np.ndarray:
    out = np.array(k, dtype=np.float64)[:3, :3].copy()
    out[0, 2] -= roi[0]
    out[1, 2] -= roi[1]
    out[0, :] /= bins[0]
    out[1, :] /= bins[1]
    return out


def default_rectified_p(camera: LensCamera) -> np.ndarray:
    """A sensible rectified projection ``(3, 4)`` for ``camera``, of the sensor's size with square pixels and a
    centred principal point: K itself for a pinhole; for plumb_bob / rational_polynomial the widest such view whose
    pixels all see through the sensor (the largest axis-aligned box inside the undistorted image of the sensor's
    border, like ``cv2.getOptimalNewCameraMatrix(alpha=0)`` but without its anisotropic focal lengths); for the
    equidistant fisheye a 120 degree horizontal field of view (90 degrees when the lens sees less than 130)."""
    p = np.zeros((3, 4))
    w, h = camera.width, camera.height
    cx, cy = (w - 1) / 2, (h - 1) / 2
    if camera.is_pinhole:
        p[:, :3] = camera.k
        return p
    if camera.distortion_model == "equidistant":
        fx, kcx = camera.k[0, 0], camera.k[0, 2]
        half_fov = max(kcx + 0.5, w - 0.5 - kcx) / fx  # theta_d at the sensor's horizontal edge (~ half field of view)
        fov = 120.0 if math.degrees(2 * half_fov) >= 130.0 else 90.0
        f = 0.5 * w / math.tan(math.radians(fov) / 2)
    else:
        dirs, ok = lens_rays(camera.k, camera.d, camera.distortion_model, w, h)
        x, y = dirs[..., 0], dirs[..., 1]
        def inner(values, valid, pick):
            values = values[valid]
            if values.size == 0:
                raise DatasetError("default_rectified_p: the lens model has no rays on the sensor's border")
            return float(pick(values))
        x_lo, x_hi = inner(x[:, 0], ok[:, 0], np.max), inner(x[:, -1], ok[:, -1], np.min)
        y_lo, y_hi = inner(y[0, :], ok[0, :], np.max), inner(y[-1, :], ok[-1, :], np.min)
        if not (x_lo < 0 < x_hi and y_lo < 0 < y_hi):
            raise DatasetError("default_rectified_p: the optical axis is outside the sensor")
        f = max(cx / -x_lo, (w - 1 - cx) / x_hi, cy / -y_lo, (h - 1 - cy) / y_hi)
    p[:, :3] = [[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]
    return p


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetError("distorted cameras need OpenCV: pip install opencv-python-headless "
                           "(or the package's 'cameras' extra)") from exc
    return cv2


def _undistort_cv(cv2, pts: np.ndarray, k: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Normalized undistorted ``(N, 2)`` of pixel points ``(N, 1, 2)``, iterated to convergence (OpenCV's default of
    5 iterations leaves ~0.1 px at the corners of a strong barrel lens)."""
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-14)
    if hasattr(cv2, "undistortPointsIter"):  # OpenCV 4.x
        out = cv2.undistortPointsIter(pts, k, d, None, None, criteria)
    else:  # OpenCV 5: undistortPoints takes the criteria
        out = cv2.undistortPoints(pts, k, d, None, None, None, criteria)
    return out.reshape(-1, 2)


def _fisheye_theta(theta_d: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angle off axis ``theta`` with ``theta (1 + k1 theta^2 + ... + k4 theta^8) = theta_d`` (Newton, float64) and
    where that has a solution in ``[0, pi]`` on the increasing branch."""
    k1, k2, k3, k4 = (float(v) for v in d)
    theta = theta_d.copy()
    for _ in range(50):
        t2 = theta * theta
        f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
        df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
        step = f / np.where(np.abs(df) > 1e-12, df, 1e-12)
        theta = np.clip(theta - step, 0.0, math.pi)
        if np.abs(step).max() < 1e-15:
            break
    t2 = theta * theta
    f = theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d
    df = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
    ok = np.isfinite(theta) & (np.abs(f) < 1e-10) & (df > 0) & (theta < math.pi)
    return theta, ok


def lens_rays(k: np.ndarray, d, distortion_model: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame ray directions through the pixel centres of a DISTORTED image.

    plumb_bob / rational_polynomial: ``cv2.undistortPoints`` (iterated to convergence) gives ``(x, y)`` and the
    ray is ``(x, y, 1)``; pixels whose undistorted point does not reproject onto them within 1e-3 px (outside the
    invertible part of the lens model) are not ok.  equidistant: the angle off axis ``theta`` is solved from
    ``theta_d = |K^-1 (u, v)|`` here (``cv2.fisheye.undistortPoints`` returns ``tan(theta)``, which cannot
    represent 90 degrees and beyond), and the ray is ``(tan(theta) cos(phi), tan(theta) sin(phi), 1)`` where
    ``cos(theta) >= 0.1`` and the unit vector ``(sin(theta) cos(phi), sin(theta) sin(phi), cos(theta))`` elsewhere
    (including ``theta >= 90`` degrees, where ``z <= 0``).

    Returns:
        ``(dirs, ok)``: ``(H, W, 3)`` float64 directions (unit z wherever z is 1: the ray parameter of a hit is
        then its depth) and ``(H, W)`` bool.
    """
    k = np.asarray(k, dtype=np.float64)
    dist = np.asarray(d, dtype=np.float64).reshape(-1)
    jj, ii = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    if distortion_model == "equidistant":
        if dist.size == 0:
            dist = np.zeros(4)
        yd = (ii - k[1, 2]) / k[1, 1]
        xd = (jj - k[0, 2] - k[0, 1] * yd) / k[0, 0]
        theta_d = np.hypot(xd, yd)
        theta, ok = _fisheye_theta(theta_d, dist)
        safe = np.where(theta_d > 0, theta_d, 1.0)
        cphi, sphi = np.where(theta_d > 0, xd / safe, 0.0), np.where(theta_d > 0, yd / safe, 0.0)
        ct = np.cos(theta)
        z_unit = ct >= _Z_UNIT_MIN_COS
        radial = np.where(z_unit, np.tan(np.where(z_unit, theta, 0.0)), np.sin(theta))
        dirs = np.stack([radial * cphi, radial * sphi, np.where(z_unit, 1.0, ct)], axis=-1)
        return dirs, ok
    if distortion_model not in DISTORTION_MODELS:
        raise DatasetError(f"lens_rays: unknown distortion model {distortion_model!r}")
    cv2 = _cv2()
    pts = np.stack([jj, ii], axis=-1).reshape(-1, 1, 2)
    if not dist.any():
        xy = np.stack([((jj - k[0, 2] - k[0, 1] * (ii - k[1, 2]) / k[1, 1]) / k[0, 0]).reshape(-1),
                       ((ii - k[1, 2]) / k[1, 1]).reshape(-1)], axis=-1)
    else:
        xy = _undistort_cv(cv2, pts, k, dist)
    obj = np.concatenate([xy, np.ones((xy.shape[0], 1))], axis=1)
    uv, _ = cv2.projectPoints(obj.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, dist)
    err = np.abs(uv.reshape(-1, 2) - pts.reshape(-1, 2)).max(axis=1)
    ok = (np.isfinite(xy).all(axis=1) & (err < 1e-3)).reshape(height, width)
    dirs = np.concatenate([np.where(np.isfinite(xy), xy, 0.0), np.ones((xy.shape[0], 1))], axis=1)
    return dirs.reshape(height, width, 3), ok


def _cone_rect(lo: np.ndarray, hi: np.ndarray, origin: tuple, unit: Vec) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (end exclusive) holding every ray (unit world directions ``unit``) that may hit the box
    ``(lo, hi)``: those inside the cone from the camera around the box's bounding sphere; None when there are
    none.  Works for any lens (the rays need not come from a pinhole)."""
    centre = (np.asarray(lo) + np.asarray(hi)) / 2
    radius = float(np.linalg.norm(np.asarray(hi) - np.asarray(lo))) / 2
    v = centre - np.asarray(origin)
    dist = float(np.linalg.norm(v))
    height, width = unit[0].shape
    if dist <= radius * 1.001 + 1e-6:
        return 0, height, 0, width
    v = v / dist
    cos_max = math.sqrt(max(0.0, 1.0 - (radius / dist) ** 2)) - 1e-4
    inside = float(v[0]) * unit[0] + float(v[1]) * unit[1] + float(v[2]) * unit[2] >= cos_max
    rows = inside.any(dim=1).nonzero()
    if rows.numel() == 0:
        return None
    cols = inside.any(dim=0).nonzero()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@dataclass(frozen=True)
class DistortedRender:
    """An image of a :class:`LensCamera` with exact ground truth.

    Attributes:
        rgb: ``(h, w, 3)`` uint8 image the camera sends (ROI cropped, then binned by averaging).
        depth: ``(h, w)`` float32 z along the optical axis, metres; NaN on sky, on rays at or beyond 90 degrees
            off axis and where the lens model has no ray.  Binned depth is the mean over each bin (NaN when any
            of its pixels is), the depth a binned pixel averages.
        camera_info: :meth:`LensCamera.camera_info` (CameraInfo fields; K, D, P of the full sensor).
        camera: the camera.
        rays: ``(H, W, 3)`` float64 full-sensor ray directions (:func:`lens_rays`): the camera-frame point of a
            pixel with depth is ``depth * ray / ray_z``.
    """

    rgb: np.ndarray
    depth: np.ndarray
    camera_info: SimpleNamespace
    camera: LensCamera
    rays: np.ndarray


def bin_image(image: np.ndarray, roi: tuple[int, int, int, int], bins: tuple[int, int]) -> np.ndarray:
    """Crop ``roi`` ``(x_offset, y_offset, width, height)`` out of a full-sensor image, then average ``bins``
    ``(bx, by)`` blocks: uint8 rounds to nearest, float propagates NaN."""
    x0, y0, w, h = roi
    bx, by = bins
    crop = image[y0:y0 + h, x0:x0 + w]
    if (bx, by) == (1, 1):
        return crop.copy()
    blocks = crop.reshape(h // by, by, w // bx, bx, *crop.shape[2:]).astype(np.float64)
    mean = blocks.mean(axis=(1, 3))
    if image.dtype == np.uint8:
        return np.floor(mean + 0.5).astype(np.uint8)
    return mean.astype(image.dtype)


def render_distorted(scene: Scene, camera: LensCamera, pose: np.ndarray, *, device: torch.device | str = "cpu",
                     shadows: bool = True) -> DistortedRender:
    """Ray-cast the image a real camera (lens distortion, ROI, binning) sends, with exact depth.

    Every pixel centre of the full distorted sensor image gets its own ray (:func:`lens_rays`), so the image and
    the depth are those of the lens model exactly (no resampling).  A pinhole camera (zero ``d``) takes
    :func:`render_scene`'s rays and gives its image and depth bit for bit.  The full sensor is rendered, then the
    ROI is cropped and the result binned by averaging (:func:`bin_image`).  Pixels without a ray (outside the
    invertible part of the lens model) are black with NaN depth.
    """
    k, p = _check_inputs(scene, camera.k, pose, camera.width, camera.height)
    width, height = int(camera.width), int(camera.height)
    dtype = torch.float32
    if camera.is_pinhole:
        rays = pixel_rays(k, width, height, dtype, device)
        dirs = torch.stack(rays, dim=-1).double().cpu().numpy()
        ok = None
        t_best, hit, image, _ = _cast(
            scene, k, p, rays, lambda lo, hi, origin, dw: _screen_rect(_aabb_corners(lo, hi), p, k, width, height),
            shadows)
    else:
        dirs, ok_np = lens_rays(k, camera.d, camera.distortion_model, width, height)
        rays = tuple(torch.as_tensor(dirs[..., c], dtype=dtype, device=device).contiguous() for c in range(3))
        ok = torch.as_tensor(ok_np, device=device)
        unit: list = []

        def rect_of(lo, hi, origin, dw):
            if not unit:
                length = torch.sqrt(dw[0] * dw[0] + dw[1] * dw[1] + dw[2] * dw[2])
                unit.extend(c / length for c in dw)
            return _cone_rect(lo, hi, origin, unit)

        t_best, hit, image, _ = _cast(scene, k, p, rays, rect_of, shadows)
    if ok is None:
        depth = torch.where(hit, t_best, torch.nan)
    else:
        dz = rays[2]
        depth = torch.where(hit & ok & (dz > 0), t_best * dz, torch.nan)
        image = torch.where(ok[..., None], image, torch.zeros_like(image))
    rgb = image.cpu().numpy()
    depth_np = depth.cpu().numpy()
    if camera.roi_box != (0, 0, width, height) or camera.bin_factors != (1, 1):
        rgb = bin_image(rgb, camera.roi_box, camera.bin_factors)
        depth_np = bin_image(depth_np, camera.roi_box, camera.bin_factors)
    return DistortedRender(rgb=rgb, depth=depth_np, camera_info=camera.camera_info(), camera=camera, rays=dirs)


def render_rectified(scene: Scene, camera: LensCamera, pose: np.ndarray, *, device: torch.device | str = "cpu",
                     shadows: bool = True) -> Sample:
    """The exact view of the rectified camera of ``camera`` (same pose): :func:`render_scene` with
    :meth:`LensCamera.rectified` (``P[:3, :3]`` adjusted for the ROI and binning, at the image's size).  Its
    ``depth`` is the ground truth of a depth map in the rectified camera."""
    k_rect, width, height = camera.rectified()
    return render_scene(scene, k_rect, pose, width, height, device=device, shadows=shadows, source="rectified")


def render_pinhole_depth(scene: Scene, k: np.ndarray, pose: np.ndarray, width: int, height: int, *,
                         device: torch.device | str = "cpu") -> np.ndarray:
    """Exact depth ``(height, width)`` float32 (NaN on sky) of any pinhole camera ``k`` at ``pose``, e.g. the
    camera a published ``depth/camera_info`` describes."""
    return render_scene(scene, k, pose, width, height, device=device, shadows=False).depth
