"""Which camera's frame the inference worker runs next: latest-frame slots of several cameras, one worker.

ROS-free (no rclpy, no torch): ``moge2_node`` fills the slots from its subscription callbacks and its worker thread
takes from them; the tests drive it with plain objects and a fake clock.

Policy (DESIGN: latest-frame, extended to several cameras):

* every camera has one slot holding its newest waiting frame; a frame that arrives while the slot is full
  replaces it and the replaced one is counted as that camera's drop, so no camera queues and latency per camera
  stays bounded at any input rate;
* the worker takes the frame of the waiting camera **served longest ago** first (a camera never served before
  any other; between equals the oldest frame): a round robin among the cameras that have something waiting.  A
  camera waits behind at most one frame of every other camera, so none starves however fast the others send
  (oldest frame first alone would not do: a camera whose newer frames keep replacing its slot always looks
  young), and a silent camera has no slot filled and never blocks the others;
* with ``batch`` on, every other waiting frame of the same *group* (same image size and token grid: frames that
  can run as one network batch) is taken with it, up to ``max_batch`` frames, in the same order;
* ``max_rate_hz`` caps the frames started per second over all cameras (a batch of n counts as n frames); while
  the cap holds the worker back, newer frames keep replacing the waiting ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from moge2_ros.errors import InputError

__all__ = ["FrameScheduler", "Waiting"]


@dataclass(frozen=True)
class Waiting:
    """One waiting frame.

    Attributes:
        camera: the camera's name (as given to :class:`FrameScheduler`).
        item: the frame (the caller's object, e.g. a ``sensor_msgs/Image``).
        received: arrival time, seconds of the scheduler's clock (monotonic).
        group: frames whose ``group`` is equal and not None may run as one batch (e.g. ``(height, width,
            tokens)``); None = never batched.
    """

    camera: str
    item: Any
    received: float
    group: Hashable | None = None


class FrameScheduler:
    """Latest-frame slots of ``cameras`` and the worker's choice of what runs next (thread-safe).

    Args:
        cameras: camera names, unique; at least one.
        max_rate_hz: frames started per second over all cameras, at most (0 = no cap).
        clock: seconds, monotonic (tests pass a fake one).

    Raises:
        InputError: no camera, a repeated name, or a negative rate.
    """

    def __init__(self, cameras: Sequence[str], max_rate_hz: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        names = list(cameras)
        if not names:
            raise InputError("cameras: expected at least one camera")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(f"cameras: each camera must be listed once, repeated: {', '.join(map(repr, repeated))}")
        self._clock = clock
        self._cond = threading.Condition()
        self._slots: dict[str, Waiting | None] = {name: None for name in names}
        self._drops: dict[str, int] = {name: 0 for name in names}
        self._served: dict[str, int] = {name: -1 for name in names}  # take() number that last served a camera
        self._takes = 0
        self._next_start = 0.0
        self._stopped = False
        self.max_rate_hz = max_rate_hz

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._slots)

    @property
    def max_rate_hz(self) -> float:
        return self._max_rate_hz

    @max_rate_hz.setter
    def max_rate_hz(self, value: float) -> None:
        if not value >= 0.0:  # NaN fails too
            raise InputError(f"max_rate_hz: expected a number >= 0 (0 = no cap), found {value!r}")
        with self._cond:
            self._max_rate_hz = float(value)
            self._cond.notify_all()

    def put(self, camera: str, item: Any, received: float | None = None, group: Hashable | None = None) -> bool:
        """Store ``item`` as ``camera``'s newest frame (never blocks on inference).

        Returns:
            True when it replaced a frame still waiting (counted as a drop of ``camera``).

        Raises:
            InputError: an unknown camera.
        """
        if camera not in self._slots:
            raise InputError(f"unknown camera {camera!r}; cameras: {', '.join(map(repr, self._slots))}")
        with self._cond:
            dropped = self._slots[camera] is not None
            if dropped:
                self._drops[camera] += 1
            self._slots[camera] = Waiting(camera, item, self._clock() if received is None else received, group)
            self._cond.notify_all()
        return dropped

    def take(self, batch: bool = False, max_batch: int = 8, timeout: float | None = None) -> list[Waiting]:
        """Wait for the next frame(s) to run and take them out of their slots.

        Args:
            batch: also take every other waiting frame of the same (not None) group as the first one.
            max_batch: largest number of frames taken at once (>= 1).
            timeout: seconds to wait at most (None = until a frame or :meth:`stop`).

        Returns:
            The frames in serving order (one camera each); empty after :meth:`stop` or the timeout.
        """
        if max_batch < 1:
            raise InputError(f"max_batch: expected an integer >= 1, found {max_batch!r}")
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                if self._stopped:
                    return []
                now = self._clock()
                waiting = sorted((w for w in self._slots.values() if w is not None),
                                 key=lambda w: (self._served[w.camera], w.received))
                hold = self._next_start - now if self._max_rate_hz > 0 else 0.0
                if waiting and hold <= 0:
                    chosen = [waiting[0]]
                    if batch and waiting[0].group is not None:
                        chosen += [w for w in waiting[1:] if w.group == waiting[0].group][: max_batch - 1]
                    self._takes += 1
                    for w in chosen:
                        self._slots[w.camera] = None
                        self._served[w.camera] = self._takes
                    if self._max_rate_hz > 0:
                        self._next_start = now + len(chosen) / self._max_rate_hz
                    return chosen
                left = None if deadline is None else deadline - now
                if left is not None and left <= 0:
                    return []
                wait = hold if waiting else None  # with a frame waiting, only the rate cap holds the worker
                if left is not None:
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(timeout=wait)

    def discard(self, camera: str | None = None) -> int:
        """Empty ``camera``'s slot (every slot for None); the frames thrown away count as drops.  Returns their
        number."""
        with self._cond:
            names = list(self._slots) if camera is None else [camera]
            count = 0
            for name in names:
                if self._slots.get(name) is not None:
                    self._slots[name] = None
                    self._drops[name] += 1
                    count += 1
            return count

    def drops(self) -> dict[str, int]:
        """Frames replaced or discarded before they ran, per camera."""
        with self._cond:
            return dict(self._drops)

    def waiting(self) -> list[str]:
        """The cameras with a frame waiting, in the order they would be served."""
        with self._cond:
            return [w.camera for w in sorted((w for w in self._slots.values() if w is not None),
                                             key=lambda w: (self._served[w.camera], w.received))]

    def stop(self) -> None:
        """Wake the worker: :meth:`take` returns an empty list from now on."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stopped
