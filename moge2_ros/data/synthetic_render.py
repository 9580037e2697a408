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
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from moge2_ros.data.sample import Sample
from moge2_ros.data.synthetic_scene import PATTERNS, Scene
from moge2_ros.errors import DatasetError

__all__ = ["render_scene", "pixel_rays"]

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
    rot, cam = p[:3, :3], p[:3, 3]
    dcx, dcy, dcz = pixel_rays(k, width, height, dtype, device)
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
        rect = _screen_rect(_aabb_corners(lo, hi), p, k, width, height)
        if rect is None:
            continue
        i0, i1, j0, j1 = rect
        t = _solid_hit(scene, solid, origin, tuple(c[i0:i1, j0:j1] for c in dw))
        cur = t_best[i0:i1, j0:j1]
        prim[i0:i1, j0:j1].masked_fill_(t < cur, len(scene.planes) + solid)
        t_best[i0:i1, j0:j1] = torch.minimum(cur, t)

    hit = torch.isfinite(t_best)
    image, normal_cam = _shade(scene, k, rot, origin, dw, t_best, prim, hit, aabbs, shadows)
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
