"""The transform tree of a recording (``/tf_static`` and ``/tf``, ``tf2_msgs/msg/TFMessage``) without ROS.

TF semantics (REP 105 / tf2): a ``geometry_msgs/TransformStamped`` with ``header.frame_id`` = parent and
``child_frame_id`` = child maps points from the child frame into the parent frame (``p_parent = T p_child``); every
frame has at most one parent, so the frames form a forest.  :class:`TfTree` holds the edges and finds the chain
between two frames; it does not compose the transforms (the caller does, with its own rigid-transform type: the
anchors' :class:`~moge2_ros.anchors.Extrinsic` in ``bag-infer``), so nothing here does rotation maths.

Static edges (``/tf_static``) hold at every time.  Dynamic edges (``/tf``) are kept per stamp and looked up by the
nearest stamp (no interpolation) within a tolerance.  Frame ids are compared without a leading ``/`` (as tf2 does).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from moge2_ros.bags import BagError

if TYPE_CHECKING:  # pragma: no cover
    from moge2_ros.bags.reader import BagReader

__all__ = ["TF_MESSAGE", "TF_TOPICS", "TfEdge", "TfTree", "frame_key"]

TF_MESSAGE: Final[str] = "tf2_msgs/msg/TFMessage"
#: The topics :meth:`TfTree.from_bag` reads by default: static first, then dynamic.
TF_TOPICS: Final[tuple[str, ...]] = ("/tf_static", "/tf")


def frame_key(frame_id: str) -> str:
    """A frame id as tf2 compares it: without leading slashes and surrounding blanks."""
    return str(frame_id).strip().lstrip("/")


@dataclass(frozen=True)
class TfEdge:
    """One transform: points of ``child`` -> ``parent`` (``transform`` is the ``geometry_msgs/Transform``:
    translation in metres, rotation as a quaternion x y z w; any object with those fields).

    Attributes:
        parent, child: frame ids (normalised by :func:`frame_key`).
        transform: the ``geometry_msgs/Transform`` message.
        stamp_ns: header stamp in ns (static edges: the stamp they were published with, ignored in lookups).
        static: from ``/tf_static`` (valid at all times).
    """

    parent: str
    child: str
    transform: Any
    stamp_ns: int
    static: bool


class TfTree:
    """Edges of a transform forest and the chain between two frames (see the module docstring)."""

    def __init__(self) -> None:
        self._static: dict[str, TfEdge] = {}  # child -> edge
        self._dynamic: dict[str, list[TfEdge]] = {}  # child -> edges sorted by stamp
        self._stamps: dict[str, list[int]] = {}

    # -------------------------------------------------------------------------------------------- building
    def add(self, edge: TfEdge) -> None:
        """Add an edge (frame ids normalised by :func:`frame_key`).  A static edge replaces an earlier static edge
        of the same child (the latest ``/tf_static`` wins, as in tf2); dynamic edges accumulate.

        Raises:
            BagError: an empty frame id, or a frame made its own parent.
        """
        edge = replace(edge, parent=frame_key(edge.parent), child=frame_key(edge.child))
        if not edge.parent or not edge.child:
            raise BagError(f"transform: empty frame id (parent {edge.parent!r}, child {edge.child!r})")
        if edge.parent == edge.child:
            raise BagError(f"transform: frame {edge.child!r} is its own parent")
        if edge.static:
            self._static[edge.child] = edge
            return
        edges = self._dynamic.setdefault(edge.child, [])
        stamps = self._stamps.setdefault(edge.child, [])
        at = bisect.bisect_right(stamps, edge.stamp_ns)
        edges.insert(at, edge)
        stamps.insert(at, edge.stamp_ns)

    def add_message(self, msg: Any, static: bool) -> int:
        """Add every ``TransformStamped`` of a ``tf2_msgs/TFMessage``; returns how many were added.

        Raises:
            BagError: a transform without the expected fields.
        """
        count = 0
        for item in getattr(msg, "transforms", None) or []:
            try:
                header = item.header
                stamp_ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
                edge = TfEdge(str(header.frame_id), str(item.child_frame_id), item.transform, stamp_ns, static)
            except (AttributeError, TypeError, ValueError) as exc:
                raise BagError(f"transform: malformed TransformStamped ({type(exc).__name__}: {exc})") from None
            self.add(edge)
            count += 1
        return count

    @classmethod
    def from_bag(cls, bag: "BagReader", topics: Collection[str] = TF_TOPICS) -> "TfTree":
        """The tree of the TFMessage topics of ``bag`` among ``topics`` (those absent from the bag are ignored;
        a topic named ``*tf_static`` is static, any other dynamic).

        Raises:
            BagError: a listed topic that is not a TFMessage, a corrupt message or bag.
        """
        tree = cls()
        present = [t for t in topics if t in bag.topics]
        for topic in present:
            if bag.topics[topic] != TF_MESSAGE:
                raise BagError(f"{bag.path}: topic {topic} is {bag.topics[topic]}, expected {TF_MESSAGE}")
        for message in bag.messages(present):
            try:
                tree.add_message(message.msg, static=message.topic.rstrip("/").endswith("tf_static"))
            except BagError as exc:
                raise BagError(f"{bag.path}: {message.topic} at log time {message.log_time_ns} ns: {exc}") from None
        return tree

    # -------------------------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self._static) + sum(len(edges) for edges in self._dynamic.values())

    @property
    def frames(self) -> list[str]:
        """Every frame id that appears in an edge, sorted."""
        names: set[str] = set()
        for child, edge in self._static.items():
            names.update((child, edge.parent))
        for child, edges in self._dynamic.items():
            names.add(child)
            names.update(e.parent for e in edges)
        return sorted(names)

    def _parent_edge(self, child: str, stamp_ns: int | None, tolerance_ns: int | None) -> TfEdge | None:
        if child in self._static:
            return self._static[child]
        edges = self._dynamic.get(child)
        if not edges:
            return None
        if stamp_ns is None:
            return edges[-1]
        stamps = self._stamps[child]
        at = bisect.bisect_left(stamps, stamp_ns)
        near = [i for i in (at - 1, at) if 0 <= i < len(edges)]
        best = min(near, key=lambda i: abs(stamps[i] - stamp_ns))
        if tolerance_ns is not None and abs(stamps[best] - stamp_ns) > tolerance_ns:
            return None
        return edges[best]

    def _ancestry(self, frame: str, stamp_ns: int | None, tolerance_ns: int | None) -> list[tuple[str, TfEdge | None]]:
        """``[(frame, edge to its parent), (parent, edge to its parent), ..., (root, None)]``."""
        out: list[tuple[str, TfEdge | None]] = []
        seen: set[str] = set()
        while frame not in seen:
            seen.add(frame)
            edge = self._parent_edge(frame, stamp_ns, tolerance_ns)
            out.append((frame, edge))
            if edge is None:
                return out
            frame = edge.parent
        raise BagError(f"transform: the frames form a loop through {frame!r}")

    def chain(self, source: str, target: str, stamp_ns: int | None = None, tolerance_ns: int | None = None
              ) -> list[tuple[TfEdge, bool]]:
        """The edges that carry points from ``source`` into ``target``, in order of application.

        Each step is ``(edge, inverse)``: ``inverse`` False = apply the edge as it is (child -> parent), True = its
        inverse (parent -> child).  Empty when ``source`` and ``target`` are the same frame.

        Args:
            source, target: frame ids (a leading ``/`` is ignored).
            stamp_ns: time of the lookup for dynamic edges (None = their latest).
            tolerance_ns: largest stamp difference of a dynamic edge used (None = any).

        Raises:
            BagError: no chain connects the frames (the message names the known frames).
        """
        source, target = frame_key(source), frame_key(target)
        if source == target:
            return []
        up = self._ancestry(source, stamp_ns, tolerance_ns)
        down = self._ancestry(target, stamp_ns, tolerance_ns)
        down_index = {frame: i for i, (frame, _) in enumerate(down)}
        for i, (frame, _) in enumerate(up):
            if frame in down_index:
                j = down_index[frame]
                steps = [(edge, False) for _, edge in up[:i] if edge is not None]
                steps += [(edge, True) for _, edge in reversed(down[:j]) if edge is not None]
                return steps
        when = "" if stamp_ns is None else f" at stamp {stamp_ns} ns" + (
            f" (within {tolerance_ns / 1e6:g} ms)" if tolerance_ns is not None else "")
        known = ", ".join(self.frames) or "none"
        raise BagError(f"no transform from frame {source!r} to frame {target!r}{when}; frames with transforms: "
                       f"{known}")
