"""Helpers of the anchor tests: scenes with exact metric ground truth: the example room rendered by the synthetic
generator, and a simulated network prediction = the true geometry divided by a wrong scale, plus noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The scale error of the simulated network: its metric outputs are the truth divided by this.
WRONG = 1.3
#: Its (arbitrary) raw metric scale.
NET_SCALE = 2.0


@dataclass(frozen=True)
class Scene:
    points: np.ndarray  # (H, W, 3) true metric points, optical frame
    mask: np.ndarray  # (H, W) bool
    k: np.ndarray  # (3, 3)

    @property
    def depth(self) -> np.ndarray:
        return self.points[..., 2]

    def network(self, seed: int = 0, noise: float = 0.01) -> np.ndarray:
        """The simulated network's metric points: truth / WRONG times (1 + iid relative noise)."""
        rng = np.random.default_rng(seed)
        h, w = self.mask.shape
        return (self.points / WRONG * (1 + noise * rng.standard_normal((h, w, 1)))).astype(np.float32)


def render(fov_x_deg: float, position=(0.0, 0.0, 0.0), width: int = 160, height: int = 120) -> Scene:
    from moge2_ros.data.example import render_example_scene

    sc = render_example_scene(width, height, fov_x_deg=fov_x_deg, camera_position=position)
    d = sc.depth.astype(np.float64)
    k = sc.intrinsics
    v, u = np.mgrid[0:height, 0:width]
    pts = np.stack([(u - k[0, 2]) / k[0, 0] * d, (v - k[1, 2]) / k[1, 1] * d, d], axis=-1)
    return Scene(points=pts, mask=np.isfinite(d) & (d > 0), k=k)
