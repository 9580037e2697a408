"""Surface normals of a point map from neighbour differences (utils3d ``points_to_normals`` semantics)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moge2_ros.geometry._checks import check_map_mask, check_point_map

__all__ = ["normals_from_points"]

#: Neighbour offsets (row, column) and the four pairs whose cross products are averaged, in utils3d's order.
_OFFSETS = {"up": (-1, 0), "left": (0, -1), "down": (1, 0), "right": (0, 1)}
_PAIRS = (("up", "left"), ("left", "down"), ("down", "right"), ("right", "up"))


def normals_from_points(
    points: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit surface normals of a ``(..., H, W, 3)`` camera-frame point map, oriented towards the camera.

    For every pixel the four neighbour pairs (up, left), (left, down), (down, right), (right, up) give the cross
    products of the difference vectors ``neighbour - centre``; each is normalised (``+ 1e-12``) and the ones
    whose three pixels are valid are summed and normalised again (as utils3d ``points_to_normals``).  With the
    OpenCV frame (x right, y down, z forward) this already points at the camera for visible surfaces; normals
    with ``dot(n, p) > 0`` are flipped anyway so that ``dot(n, p) <= 0`` always.

    A pixel is valid if it and its neighbours' points are finite (and ``mask`` is True there); the normal is
    valid where at least one neighbour pair is valid and the summed normal does not vanish.  The image border
    has no outside neighbours.

    Args:
        points: ``(..., H, W, 3)`` camera-frame points (OpenCV frame).
        mask: optional ``(..., H, W)`` bool validity.

    Returns:
        ``(normals, valid)``: ``(..., H, W, 3)`` unit normals (zero where invalid; a view of a channels-first
        buffer, ``.contiguous()`` gives interleaved x, y, z), ``(..., H, W)`` bool.
    """
    check_point_map(points)
    check_map_mask(mask, points.shape[:-1])
    finite = torch.isfinite(points).all(dim=-1)
    valid = finite if mask is None else finite & mask.to(torch.bool)
    height, width = points.shape[-3], points.shape[-2]
    batch = points.shape[:-3]

    # The work is elementwise arithmetic on contiguous (..., H, W) planes, several times faster than cross
    # products of (..., H, W, 3) tensors; every step is written in place where it can be (memory traffic is
    # the cost).  Points go into planes padded by one pixel, zero at invalid pixels and in the border.
    planes = points.new_zeros((*batch, 3, height + 2, width + 2))
    zero = torch.zeros((), dtype=points.dtype, device=points.device)
    torch.where(valid.unsqueeze(-3), points.movedim(-1, -3), zero, out=planes[..., 1:-1, 1:-1])
    val_pad = F.pad(valid, (1, 1, 1, 1), value=False)

    def at(x: torch.Tensor, di: int, dj: int) -> torch.Tensor:
        return x[..., 1 + di : 1 + di + height, 1 + dj : 1 + dj + width]

    centre = [at(planes[..., c, :, :], 0, 0) for c in range(3)]
    diff = {name: [at(planes[..., c, :, :], di, dj) - centre[c] for c in range(3)]
            for name, (di, dj) in _OFFSETS.items()}
    nval = {name: at(val_pad, di, dj) for name, (di, dj) in _OFFSETS.items()}

    summed: list[torch.Tensor] = []
    any_pair = torch.zeros_like(valid)
    for a, b in _PAIRS:
        (ax, ay, az), (bx, by, bz) = diff[a], diff[b]
        cross = [ay * bz, az * bx, ax * by]
        cross[0] -= az * by
        cross[1] -= ax * bz
        cross[2] -= ay * bx
        length = cross[0] * cross[0]
        length += cross[1] * cross[1]
        length += cross[2] * cross[2]
        length.sqrt_().add_(1e-12)
        pair_valid = nval[a] & nval[b] & valid
        # An invalid pair divides by +inf: its finite cross product becomes 0 (one fill instead of three masks).
        length.masked_fill_(~pair_valid, float("inf"))
        for c in range(3):
            cross[c].div_(length)
            if len(summed) < 3:
                summed.append(cross[c].add_(0.0))  # 0 + x, as a sum started at zero (turns -0 into +0)
            else:
                summed[c] += cross[c]
        any_pair |= pair_valid
    norm = summed[0] * summed[0]
    norm += summed[1] * summed[1]
    norm += summed[2] * summed[2]
    norm.sqrt_()
    out_valid = any_pair & (norm > 1e-6)
    norm.clamp_min_(1e-12)
    out = points.new_empty((*batch, 3, height, width))
    for c in range(3):
        torch.div(summed[c], norm, out=out[..., c, :, :])
    facing = out[..., 0, :, :] * centre[0]
    facing += out[..., 1, :, :] * centre[1]
    facing += out[..., 2, :, :] * centre[2]
    out.mul_(torch.where(facing > 0, -1.0, 1.0).to(out.dtype).unsqueeze(-3))
    out.masked_fill_(~out_valid.unsqueeze(-3), 0.0)
    return out.movedim(-3, -1), out_valid
