"""Rectification of distorted camera images for the model, and the way back onto the raw image grid.

The maps are computed once per camera (OpenCV, as ``image_proc`` does: ``cv2.initUndistortRectifyMap`` for
``plumb_bob`` / ``rational_polynomial``, ``cv2.fisheye.initUndistortRectifyMap`` for ``equidistant``, from K, D and
R into the rectified pinhole camera K') and kept on the inference device as ``grid_sample`` grids; each frame is
then one :func:`moge2_ros.geometry.remap.remap` there.  :class:`RectifierCache` keys them on the camera's content
(:attr:`moge2_ros.io.camera_model.CameraModel.key`), the chosen view and the device, so a CameraInfo that changes
(size, D, ...) gets new maps on its first frame and no restart is needed.

The raw grid (``output_grid = raw``): for each raw pixel, its ray (``cv2.undistortPoints`` / fisheye), checked by
projecting it back (a ray that does not land on its pixel within 0.5 px, e.g. behind a fisheye's 90 degrees, is
invalid), rotated by R into the rectified camera and projected with K' — where the rectified outputs are sampled
(nearest: no depth mixed across edges).  Depth on the raw grid is along the raw camera's optical axis; points and
normals are in the raw camera frame (R^T of the rectified ones).

OpenCV is imported inside the functions that need it (``pip install opencv-python-headless``, the ``cameras``
extra); without it a distorted camera is refused with that hint (and K is estimated).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from moge2_ros.geometry.remap import pixel_map_to_grid, remap
from moge2_ros.io.camera_model import CameraModel, rectified_intrinsics
from moge2_ros.io.msg_codec import ConversionError

__all__ = ["RawGrid", "Rectifier", "RectifierCache", "rectify_maps", "unrectify_rays"]

#: Cameras (maps) kept per pipeline: a few sizes / calibrations of one stream.
CACHE_SIZE: Final[int] = 4

#: Largest distance, pixels, between a raw pixel and the projection of its recovered ray (raw grid).
_RAY_TOL_PX: Final[float] = 0.5


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise ConversionError("camera_info: rectifying a distorted camera needs OpenCV: pip install "
                              "opencv-python-headless (the 'cameras' extra of moge2_ros)") from None
    return cv2


def rectify_maps(camera: CameraModel, k_rect: np.ndarray, width: int, height: int) \
        -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(map_x, map_y)``, ``(height, width)`` float32: the raw pixel each pixel of the rectified image samples.

    ``cv2.initUndistortRectifyMap(K, D, R, K', (width, height), CV_32FC1)`` (``cv2.fisheye.`` for
    ``equidistant``), the maps ``image_proc`` remaps with (there into P).
    """
    cv2 = _cv2()
    k = np.asarray(camera.k, dtype=np.float64)
    k_new = np.asarray(k_rect, dtype=np.float64)
    if camera.distortion_model == "equidistant":
        map_x, map_y = cv2.fisheye.initUndistortRectifyMap(k, camera.d.reshape(4, 1), camera.r, k_new,
                                                           (width, height), cv2.CV_32FC1)
    else:
        d = camera.d if camera.d.size else np.zeros(5)
        map_x, map_y = cv2.initUndistortRectifyMap(k, d, camera.r, k_new, (width, height), cv2.CV_32FC1)
    return map_x, map_y


def unrectify_rays(camera: CameraModel) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Rays of the raw image's pixels in the raw camera frame: ``(H, W, 3)`` ``(x, y, 1)`` and where they are
    valid (the ray projects back onto its pixel within 0.5 px)."""
    cv2 = _cv2()
    h, w = camera.height, camera.width
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    uv = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
    k = np.asarray(camera.k, dtype=np.float64)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)
    if camera.distortion_model == "equidistant":
        d = camera.d.reshape(4, 1)
        xy = cv2.fisheye.undistortPoints(uv, k, d, criteria=criteria).reshape(-1, 2)
        back = cv2.fisheye.distortPoints(xy.reshape(-1, 1, 2), k, d).reshape(-1, 2)
    else:
        xy = cv2.undistortPoints(uv, k, camera.d, criteria=criteria).reshape(-1, 2)
        obj = np.concatenate([xy, np.ones((xy.shape[0], 1))], axis=1).reshape(-1, 1, 3)
        back, _ = cv2.projectPoints(obj, np.zeros(3), np.zeros(3), k, camera.d)
        back = back.reshape(-1, 2)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(xy).all(axis=1) & (np.abs(back - uv.reshape(-1, 2)).max(axis=1) <= _RAY_TOL_PX)
    rays = np.concatenate([xy, np.ones((xy.shape[0], 1))], axis=1)
    return rays.reshape(h, w, 3), ok.reshape(h, w)


@dataclass(frozen=True)
class RawGrid:
    """How rectified outputs map back onto the raw image grid (on the inference device).

    Attributes:
        grid: ``(1, H, W, 2)`` grid_sample grid into the rectified image (nearest sampling).
        valid: ``(H, W)`` bool: the raw pixel has a ray that lands inside the rectified image.
        rays: ``(H, W, 3)`` float32 raw-frame ray ``(x, y, 1)`` of each raw pixel.
        z_scale: ``(H, W)`` float32 ``1 / (R ray)_z``: raw depth = rectified depth x z_scale.
    """

    grid: torch.Tensor
    valid: torch.Tensor
    rays: torch.Tensor
    z_scale: torch.Tensor


class Rectifier:
    """One camera's rectification on one device: the rectified pinhole view and its sampling grid.

    Args:
        camera: the raw camera (must be distorted: a pinhole camera is used as it is).
        device: inference device of the grids.
        fov_deg, size: the rectified view (:func:`~moge2_ros.io.camera_model.rectified_intrinsics`).

    Raises:
        ConversionError: an unusable view, or OpenCV missing.
    """

    def __init__(self, camera: CameraModel, device: torch.device | str, fov_deg: float = 0.0,
                 size: tuple[int, int] | None = None) -> None:
        self.camera = camera
        self.device = torch.device(device)
        self.k, self.width, self.height = rectified_intrinsics(camera, fov_deg, size)
        map_x, map_y = rectify_maps(camera, self.k, self.width, self.height)
        self.grid = pixel_map_to_grid(torch.from_numpy(map_x), torch.from_numpy(map_y), camera.width,
                                      camera.height).to(self.device)
        self._raw: RawGrid | None = None
        self._raw_lock = threading.Lock()

    def rectify(self, rgb: np.ndarray) -> torch.Tensor:
        """``(3, h, w)`` float32 RGB in [0, 1] of the rectified view, on the device (0 outside the raw image).

        Args:
            rgb: ``(H, W, 3)`` raw image, uint8 or float in [0, 1].
        """
        host = np.ascontiguousarray(rgb)
        if not host.flags.writeable:  # a read-only message buffer: torch would warn about sharing it
            host = host.copy()
        image = torch.from_numpy(host).to(self.device, non_blocking=True)
        image = image.permute(2, 0, 1).to(torch.float32)
        if not np.issubdtype(rgb.dtype, np.floating):
            image = image * (1.0 / 255.0)
        return remap(image, self.grid).clamp_(0.0, 1.0)

    def raw_grid(self) -> RawGrid:
        """The way back onto the raw grid (computed on first use, then kept)."""
        with self._raw_lock:
            if self._raw is None:
                self._raw = self._make_raw_grid()
            return self._raw

    def _make_raw_grid(self) -> RawGrid:
        cam = self.camera
        rays, ok = unrectify_rays(cam)
        rotated = rays @ cam.r.T  # ray in the rectified frame
        with np.errstate(divide="ignore", invalid="ignore"):
            z = rotated[..., 2]
            ok &= z > 1e-9
            q = rotated @ self.k.T
            qx, qy = q[..., 0] / z, q[..., 1] / z
            inside = ok & (qx >= -0.5) & (qx <= self.width - 0.5) & (qy >= -0.5) & (qy <= self.height - 0.5)
            z_scale = np.where(inside, 1.0 / z, 0.0)
        qx = np.where(inside, qx, -2.0)  # outside: masked anyway
        qy = np.where(inside, qy, -2.0)
        grid = pixel_map_to_grid(torch.from_numpy(qx), torch.from_numpy(qy), self.width, self.height)
        return RawGrid(grid=grid.to(self.device), valid=torch.from_numpy(inside).to(self.device),
                       rays=torch.from_numpy(rays.astype(np.float32)).to(self.device),
                       z_scale=torch.from_numpy(z_scale.astype(np.float32)).to(self.device))


class RectifierCache:
    """:class:`Rectifier` per (camera content, view, device), the :data:`CACHE_SIZE` most recently used."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[tuple[Any, ...], Rectifier] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # maps computed so far (a camera change costs one)

    def get(self, camera: CameraModel, device: torch.device | str, fov_deg: float = 0.0,
            size: tuple[int, int] | None = None) -> Rectifier:
        key = (camera.key, float(fov_deg), tuple(size) if size else None, str(torch.device(device)))
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
        item = Rectifier(camera, device, fov_deg, size)
        with self._lock:
            self._items[key] = item
            self.computed += 1
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return item
