"""Running statistics of a frame pipeline: rates over a window and latency percentiles (no ROS, no torch)."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np


class PipelineStats:
    """Thread-safe counters and a sliding window of event times / latencies.

    Counters: ``received`` (frames arrived), ``processed`` (frames published), ``dropped`` (frames overwritten
    before processing: the latest-frame policy), ``unwatched`` (frames taken while no output had a subscriber: not
    computed), ``bad_input`` (rejected messages), ``over_budget`` (frames refused
    by the memory budget or the image size limit, before decoding), ``errors`` (frames that failed for another
    reason), ``rejected_params`` (refused parameter changes); with metric anchoring on: ``anchored`` (frames whose
scale the anchors set), ``anchor_fallback`` (frames that kept the network's / filter's scale), ``anchor_gated``
(anchored scales rejected as jumps) and ``anchors_rejected`` (readings or samples dropped: stale, NaN, behind the
camera, outside the image, out of range, malformed).  Rates, percentiles and ``recent_failures`` (frames
    lost to bad_input, over_budget or errors) are computed over the last ``window_s`` seconds.
    """

    def __init__(self, window_s: float = 10.0, max_samples: int = 10000) -> None:
        self.window_s = window_s
        self._lock = threading.Lock()
        self._received: deque[float] = deque(maxlen=max_samples)
        self._processed: deque[tuple[float, float, float]] = deque(maxlen=max_samples)  # (t, latency, inference)
        self._failed: deque[float] = deque(maxlen=max_samples)
        self.counts = {"received": 0, "processed": 0, "dropped": 0, "unwatched": 0, "bad_input": 0, "over_budget": 0, "errors": 0,
                       "rejected_params": 0}
        self.last_error = ""
        self._anchored: deque[float] = deque(maxlen=max_samples)
        self._scale: dict[str, float | int | str] = {}
        self._t0 = time.monotonic()

    def on_received(self, now: float | None = None) -> None:
        with self._lock:
            self.counts["received"] += 1
            self._received.append(time.monotonic() if now is None else now)

    def on_dropped(self) -> None:
        with self._lock:
            self.counts["dropped"] += 1

    def on_unwatched(self) -> None:
        """A frame taken from the slot but not computed: no output had a subscriber."""
        with self._lock:
            self.counts["unwatched"] += 1

    def on_processed(self, latency_s: float, inference_s: float, now: float | None = None) -> None:
        with self._lock:
            self.counts["processed"] += 1
            self._processed.append((time.monotonic() if now is None else now, latency_s, inference_s))

    def on_scale(self, decision: Any, now: float | None = None) -> None:
        """Count a frame's metric-anchoring decision (a :class:`moge2_ros.anchors.ScaleDecision`)."""
        with self._lock:
            for key in ("anchored", "anchor_fallback", "anchor_gated", "anchors_rejected"):
                self.counts.setdefault(key, 0)
            self.counts["anchored" if decision.anchored else "anchor_fallback"] += 1
            self.counts["anchor_gated"] += int(decision.gated)
            self.counts["anchors_rejected"] += sum(v for k, v in decision.dropped.items() if k != "subsampled")
            if decision.anchored:
                self._anchored.append(time.monotonic() if now is None else now)
            self._scale = {"scale_source": decision.source, "applied_scale": float(decision.applied_scale),
                           "network_scale": float(decision.network_scale), "scale_log_std": float(decision.log_std),
                           "anchor_reason": decision.reason}

    def on_rejected_params(self) -> None:
        with self._lock:
            self.counts["rejected_params"] += 1

    def on_failure(self, kind: str, message: str, now: float | None = None, frame: bool = True) -> None:
        """``kind`` is 'bad_input', 'over_budget' or 'errors'; ``frame`` False for a problem that did not cost the frame (an
        ignored camera_info): counted, but not in ``recent_failures``."""
        with self._lock:
            self.counts[kind] += 1
            self.last_error = message
            if frame:
                self._failed.append(time.monotonic() if now is None else now)

    def snapshot(self, now: float | None = None) -> dict[str, float | int | str]:
        """Counters, input / output rates (Hz) and latency percentiles (ms) over the window."""
        now = time.monotonic() if now is None else now
        start = now - self.window_s
        with self._lock:
            received = [t for t in self._received if t >= start]
            processed = [p for p in self._processed if p[0] >= start]
            failed = sum(1 for t in self._failed if t >= start)
            out: dict[str, float | int | str] = dict(self.counts)
            out["last_error"] = self.last_error
            anchored = sum(1 for t in self._anchored if t >= start)
            out.update(self._scale)
        span = max(min(self.window_s, now - self._t0), 1e-3)  # a young pipeline has a shorter window
        out["input_rate_hz"] = len(received) / span
        out["output_rate_hz"] = len(processed) / span
        out["recent_failures"] = failed
        if self._scale:
            out["anchor_rate_hz"] = anchored / span
        if processed:
            lat = np.array([p[1] for p in processed]) * 1e3
            inf = np.array([p[2] for p in processed]) * 1e3
            for q in (50, 95, 99):
                out[f"latency_p{q}_ms"] = float(np.percentile(lat, q))
            out["inference_p50_ms"] = float(np.percentile(inf, 50))
        return out
