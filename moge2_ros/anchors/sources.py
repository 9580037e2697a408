"""Metric anchor sources: sensor readings turned into sparse metric depth samples in the camera image.

Every source is a small frozen dataclass holding one reading of the robot's own metric sensors, already in
numpy (the ROS node converts the messages and looks the transforms up; nothing here imports ROS):

* :class:`PointCloudAnchor` - an ``(N, 3)`` cloud (LiDAR, stereo, RGB-D) in its own frame plus the
  :class:`Extrinsic` to the camera optical frame; projected through the pinhole ``K`` (nearest point per pixel).
* :class:`DepthImageAnchor` - a registered depth image of any size (float metres or uint16 millimetres;
  0 / NaN / inf = invalid), resampled (nearest) to the image grid.
* :class:`RangeAnchor` - a ``sensor_msgs/Range`` reading (REP 117): a cone along the sensor's +x axis.
* :class:`CameraHeightAnchor` - the known height of the camera above a flat floor and the up direction.

Frames: the camera optical frame of REP 103 (x right, y down, z forward), metres; pixel coordinates follow the
ROS / OpenCV convention (the centre of pixel column ``j`` is at ``u = j``).  A sample's ``z`` is depth along
the optical axis (not range).

Bad input never raises out of :meth:`moge2_ros.anchors.ScaleAnchoring.update`: readings that are malformed as a
whole raise :class:`AnchorError` here (caught and counted there); bad individual points are dropped and counted
in a :class:`DropCounts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from moge2_ros.errors import InputError

__all__ = [
    "AnchorError",
    "Anchor",
    "DropCounts",
    "DepthSamples",
    "Extrinsic",
    "PointCloudAnchor",
    "DepthImageAnchor",
    "RangeAnchor",
    "CameraHeightAnchor",
    "check_intrinsics",
]

#: Nearest z (metres) a projected sample may have; closer (or behind the camera) is dropped as ``behind``.
MIN_Z_M = 1e-3
#: Points per cloud at most (the index of a point is packed into 18 bits of the nearest-per-pixel key).
_INDEX_BITS = 18
_MAX_INDEX = 1 << _INDEX_BITS


class AnchorError(InputError):
    """A sensor reading cannot be used as a whole (wrong shape, bad transform, bad sensor limits)."""


@dataclass
class DropCounts:
    """Counts of dropped anchor data, per reason (samples for points / pixels, readings for whole messages).

    Attributes:
        stale: readings older (or newer) than the age limit.
        empty: readings without a single usable sample.
        nan: non-finite coordinates or depths.
        behind: points at or behind the camera plane (``z <= 1 mm``).
        outside: points projecting outside the image.
        out_of_range: values outside the sensor's limits (Range min/max, +/-inf, non-positive depth).
        invalid: readings refused as a whole (bad quaternion, wrong shape, ...).
        subsampled: points left out by the point-count cap (not an error; bounded time).
    """

    stale: int = 0
    empty: int = 0
    nan: int = 0
    behind: int = 0
    outside: int = 0
    out_of_range: int = 0
    invalid: int = 0
    subsampled: int = 0

    def add(self, other: "DropCounts") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def total(self) -> int:
        return sum(self.as_dict().values()) - self.subsampled


@dataclass(frozen=True)
class DepthSamples:
    """Sparse metric depth samples in the image.

    Attributes:
        u, v: ``(M,)`` int64 pixel column / row, inside the image.
        z: ``(M,)`` float64 metric depth along the optical axis, metres, > 0.
        weight: ``(M,)`` float64 weights in ``(0, 1]``.
    """

    u: np.ndarray
    v: np.ndarray
    z: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.z.shape[0])

    @staticmethod
    def empty() -> "DepthSamples":
        i, f = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return DepthSamples(i, i.copy(), f, f.copy())


def check_intrinsics(k: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(3, 3)`` pinhole ``K`` (pixels) as float64, or :class:`AnchorError` (non-finite, fx or fy <= 0)."""
    k = np.asarray(k.detach().cpu() if isinstance(k, torch.Tensor) else k, dtype=np.float64)
    if k.shape != (3, 3) or not np.isfinite(k).all() or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise AnchorError(f"anchors: expected a finite (3, 3) pinhole K with fx, fy > 0, found {k.tolist()}")
    return k


@dataclass(frozen=True)
class Extrinsic:
    """Rigid transform from a sensor frame into the camera optical frame: ``p_cam = R(q) p_sensor + t``.

    Attributes:
        translation: ``(3,)`` metres, the sensor origin in the camera optical frame.
        quaternion: ``(4,)`` unit quaternion ``(x, y, z, w)`` (ROS order) of the rotation sensor -> camera.
            Finite with norm within 1e-3 of 1 (then normalised); anything else is refused.
    """

    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quaternion: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    @staticmethod
    def from_matrix(rotation: np.ndarray, translation=(0.0, 0.0, 0.0)) -> "Extrinsic":
        """The extrinsic of a ``(3, 3)`` rotation matrix (sensor -> camera) and a translation (metres)."""
        r = np.asarray(rotation, dtype=np.float64)
        if r.shape != (3, 3) or not np.isfinite(r).all():
            raise AnchorError(f"extrinsic: expected a finite (3, 3) rotation matrix, found {r.tolist()}")
        # Shepperd's method: the largest of w, x, y, z first (numerically stable)
        tr = float(np.trace(r))
        cands = [tr, r[0, 0], r[1, 1], r[2, 2]]
        i = int(np.argmax(cands))
        if i == 0:
            w = math.sqrt(max(1.0 + tr, 0.0)) / 2
            x, y, z = (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)
        elif i == 1:
            x = math.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 0.0)) / 2
            w, y, z = (r[2, 1] - r[1, 2]) / (4 * x), (r[0, 1] + r[1, 0]) / (4 * x), (r[0, 2] + r[2, 0]) / (4 * x)
        elif i == 2:
            y = math.sqrt(max(1.0 - r[0, 0] + r[1, 1] - r[2, 2], 0.0)) / 2
            w, x, z = (r[0, 2] - r[2, 0]) / (4 * y), (r[0, 1] + r[1, 0]) / (4 * y), (r[1, 2] + r[2, 1]) / (4 * y)
        else:
            z = math.sqrt(max(1.0 - r[0, 0] - r[1, 1] + r[2, 2], 0.0)) / 2
            w, x, y = (r[1, 0] - r[0, 1]) / (4 * z), (r[0, 2] + r[2, 0]) / (4 * z), (r[1, 2] + r[2, 1]) / (4 * z)
        q = np.array([x, y, z, w])
        q /= np.linalg.norm(q)
        return Extrinsic(tuple(float(c) for c in np.asarray(translation, dtype=np.float64).reshape(3)),
                         tuple(float(c) for c in q))

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """``(R (3, 3), t (3,))`` float64, or :class:`AnchorError` for a bad translation or quaternion."""
        try:
            t = np.asarray(self.translation, dtype=np.float64).reshape(-1)
            q = np.asarray(self.quaternion, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise AnchorError(f"extrinsic: expected numbers, found translation {self.translation!r}, quaternion "
                              f"{self.quaternion!r}") from None
        if t.shape != (3,) or not np.isfinite(t).all():
            raise AnchorError(f"extrinsic: expected a finite translation (x, y, z), found {self.translation}")
        if q.shape != (4,) or not np.isfinite(q).all():
            raise AnchorError(f"extrinsic: expected a finite quaternion (x, y, z, w), found {self.quaternion}")
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > 1e-3:
            raise AnchorError(f"extrinsic: quaternion norm {norm:.6g} is not 1 (tolerance 1e-3); "
                              "expected a unit quaternion (x, y, z, w)")
        x, y, z, w = q / norm
        r = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ])
        return r, t


@dataclass(frozen=True)
class PointCloudAnchor:
    """A metric point cloud (LiDAR scan, stereo or RGB-D points) in its own frame.

    Attributes:
        points: ``(N, 3)`` float metres in the sensor frame (NaN rows are dropped).
        extrinsic: sensor frame -> camera optical frame.
        stamp: acquisition time in seconds (same clock as the image), or None = taken with the image.
        weight: weight of every sample in the fit (``(0, 1]``).
        max_points: points used at most (<= 262144); larger clouds are subsampled with a fixed stride (bounded
            time).
    """

    points: np.ndarray
    extrinsic: Extrinsic = field(default_factory=Extrinsic)
    stamp: float | None = None
    weight: float = 1.0
    max_points: int = 200_000
    kind: str = "points"

    def samples(self, k: np.ndarray, width: int, height: int, drops: DropCounts) -> DepthSamples:
        """Project into the image: one sample per pixel (the nearest point), drops counted in ``drops``."""
        pts = np.asarray(self.points)
        if pts.ndim != 2 or pts.shape[1] != 3 or not np.issubdtype(pts.dtype, np.number):
            raise AnchorError(f"point anchor: expected an (N, 3) numeric array, found shape {pts.shape} "
                              f"dtype {pts.dtype}")
        r, t = self.extrinsic.matrix()
        cap = min(int(self.max_points), _MAX_INDEX)
        n = pts.shape[0]
        if n > cap:
            stride = math.ceil(n / cap)
            pts = pts[::stride]
            drops.subsampled += n - pts.shape[0]
        px, py, pz = (pts[:, i].astype(np.float64) for i in range(3))
        # the rotation written out (a BLAS matmul of (N, 3) x (3, 3) is slower and spins threads under load)
        x, y, z = (r[i, 0] * px + r[i, 1] * py + r[i, 2] * pz + t[i] for i in range(3))
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
        if not finite.all():  # boolean indexing only when needed
            drops.nan += int(finite.size - np.count_nonzero(finite))
            x, y, z = x[finite], y[finite], z[finite]
        front = z > MIN_Z_M
        drops.behind += int(front.size - np.count_nonzero(front))
        z_safe = np.where(front, z, 1.0)
        u = np.floor(k[0, 0] * x / z_safe + k[0, 1] * y / z_safe + k[0, 2] + 0.5)
        v = np.floor(k[1, 1] * y / z_safe + k[1, 2] + 0.5)
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        drops.outside += int(np.count_nonzero(front & ~inside))
        sel = np.flatnonzero(front & inside)
        if sel.size == 0:
            return DepthSamples.empty()
        u, v, z = u[sel].astype(np.int64), v[sel].astype(np.int64), z[sel]
        # nearest point per pixel in one scatter-min over the pixel grid (O(N + H W), no sort): the key orders by
        # z (the bits of a positive float32 sort like the float) and then by the point's index (unique winner)
        pix = torch.from_numpy(v * width + u)
        zbits = torch.from_numpy(z.astype(np.float32)).view(torch.int32).to(torch.int64)
        key = (zbits << _INDEX_BITS) | torch.arange(z.size, dtype=torch.int64)
        best = torch.full((height * width,), torch.iinfo(torch.int64).max, dtype=torch.int64)
        best.scatter_reduce_(0, pix, key, reduce="amin")
        idx = (best[pix] == key).nonzero().squeeze(1).numpy()
        return DepthSamples(u[idx], v[idx], z[idx], np.full(idx.size, float(self.weight)))


@dataclass(frozen=True)
class DepthImageAnchor:
    """A depth image registered to the camera (same viewpoint and field of view, any resolution).

    Attributes:
        depth: ``(Hd, Wd)`` float metres, or uint16 millimetres; 0, NaN and inf are invalid.
        stamp: acquisition time in seconds, or None = taken with the image.
        weight: weight of every sample.
        max_samples: samples used at most for the fit (a fixed pixel stride keeps the time bounded).
    """

    depth: np.ndarray
    stamp: float | None = None
    weight: float = 1.0
    max_samples: int = 20_000
    kind: str = "depth"

    def resampled(self, width: int, height: int, drops: DropCounts | None = None) -> np.ndarray:
        """The depth on the image grid ``(height, width)`` float64 metres (nearest neighbour), NaN invalid."""
        d = np.asarray(self.depth)
        if d.ndim != 2 or d.shape[0] < 1 or d.shape[1] < 1:
            raise AnchorError(f"depth anchor: expected an (H, W) image, found shape {d.shape}")
        if d.dtype == np.uint16:
            metres = d.astype(np.float64) / 1000.0
        elif np.issubdtype(d.dtype, np.floating):
            metres = d.astype(np.float64)
        else:
            raise AnchorError(f"depth anchor: expected float metres or uint16 millimetres, found {d.dtype}")
        hd, wd = metres.shape
        rows = np.minimum(((np.arange(height) + 0.5) * hd / height).astype(np.int64), hd - 1)
        cols = np.minimum(((np.arange(width) + 0.5) * wd / width).astype(np.int64), wd - 1)
        out = metres[rows[:, None], cols[None, :]]
        if drops is not None:
            drops.nan += int(np.isnan(out).sum())
            drops.out_of_range += int((np.isinf(out) | (out <= 0)).sum())
        return np.where(np.isfinite(out) & (out > 0), out, np.nan)

    def samples(self, k: np.ndarray, width: int, height: int, drops: DropCounts) -> DepthSamples:
        grid = self.resampled(width, height, drops)
        v, u = np.nonzero(np.isfinite(grid))
        if v.size > self.max_samples:
            stride = math.ceil(v.size / self.max_samples)
            drops.subsampled += v.size - v[::stride].size
            v, u = v[::stride], u[::stride]
        return DepthSamples(u.astype(np.int64), v.astype(np.int64), grid[v, u], np.full(v.size, float(self.weight)))


@dataclass(frozen=True)
class RangeAnchor:
    """One ``sensor_msgs/Range`` reading: the distance to the closest surface in a cone (REP 117).

    The cone has its apex at the sensor origin, its axis along the sensor's +x axis (ROS Range convention) and
    half-angle ``field_of_view / 2``.  ``range`` = +inf means "no return within max_range" and -inf "closer than
    min_range": both are ignored for the scale, as are finite values outside ``[min_range, max_range]``.

    Attributes:
        range: metres.
        min_range, max_range: sensor limits, metres (``0 <= min < max``).
        field_of_view: full cone angle, radians, in ``(0, pi)``.
        extrinsic: sensor frame -> camera optical frame.
        stamp: acquisition time in seconds, or None.
        log_std: the reading's own uncertainty as a std of log distance (e.g. 0.02 = 2 %).
    """

    range: float
    min_range: float
    max_range: float
    field_of_view: float
    extrinsic: Extrinsic = field(default_factory=Extrinsic)
    stamp: float | None = None
    log_std: float = 0.02
    kind: str = "range"

    def checked(self, drops: DropCounts) -> tuple[np.ndarray, np.ndarray, float, float] | None:
        """``(apex (3,), axis (3,), cos_half_angle, range)`` in the camera frame, or None when the reading is to be
        ignored (counted as ``out_of_range`` / ``nan``); :class:`AnchorError` for bad sensor limits."""
        try:
            lo, hi, fov, r = (float(x) for x in (self.min_range, self.max_range, self.field_of_view, self.range))
        except (TypeError, ValueError):
            raise AnchorError(f"range anchor: expected numbers, found range {self.range!r}, limits "
                              f"{self.min_range!r}..{self.max_range!r}, field_of_view {self.field_of_view!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise AnchorError(f"range anchor: expected 0 <= min_range < max_range, found {lo}, {hi}")
        if not (math.isfinite(fov) and 0 < fov < math.pi):
            raise AnchorError(f"range anchor: expected 0 < field_of_view < pi radians, found {fov}")
        if math.isnan(r):
            drops.nan += 1
            return None
        if not (lo <= r <= hi) or r <= 0:
            drops.out_of_range += 1
            return None
        rot, t = self.extrinsic.matrix()
        return t, rot[:, 0], math.cos(fov / 2), r


@dataclass(frozen=True)
class CameraHeightAnchor:
    """The camera's known height above a flat floor.

    Attributes:
        height: metres, > 0: distance from the camera centre to the floor plane.
        up: ``(3,)`` the up direction (against gravity) in the camera optical frame, e.g. ``(0, -1, 0)`` for a
            level camera (y points down in REP 103); normalised here.  From the nominal mounting pitch / roll or
            an IMU.
        stamp: None (a constant) or the time of the up estimate.
    """

    height: float
    up: tuple[float, float, float] = (0.0, -1.0, 0.0)
    stamp: float | None = None
    kind: str = "ground"

    def checked(self) -> tuple[float, np.ndarray]:
        try:
            h = float(self.height)
            up = np.asarray(self.up, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise AnchorError(f"camera height anchor: expected a height in metres and an up vector (3,), found "
                              f"{self.height!r}, {self.up!r}") from None
        if not (math.isfinite(h) and h > 0):
            raise AnchorError(f"camera height anchor: expected a height > 0 metres, found {self.height}")
        norm = float(np.linalg.norm(up)) if up.shape == (3,) and np.isfinite(up).all() else 0.0
        if norm < 1e-6:
            raise AnchorError(f"camera height anchor: expected a finite non-zero up vector (3,), found {self.up}")
        return h, up / norm


Anchor = PointCloudAnchor | DepthImageAnchor | RangeAnchor | CameraHeightAnchor
