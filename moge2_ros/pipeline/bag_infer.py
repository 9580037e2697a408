"""``moge2-ros bag-infer``: run MoGe-2 over the images of a rosbag2 recording and write its outputs into a new bag.

For every selected image message the output bag gets, under the output namespace (default ``/moge2``), the same
topics and message content as ``moge2_node`` publishes: ``depth/image`` (32FC1 metres, NaN invalid),
``depth/camera_info`` (K of the depth image: the input CameraInfo's when valid, its rectified camera P[:3, :3] when
it has distortion, else the estimate), ``geometry``
(``moge2_ros_msgs/MonocularGeometry``) and optionally ``points`` (PointCloud2 x, y, z, rgb). The content comes from
the node's own frame pipeline (:class:`moge2_ros.pipeline.frame.FramePipeline`, decoding by
:func:`~moge2_ros.pipeline.frame.decode_rgb`), so it equals the node's byte for byte for the same frames and
settings (tested against a running node). Every output message carries the image's header (stamp and frame_id)
unchanged and is logged at the image's log time, so the output plays back in step with the input;
``copy_input_topics`` copies the input messages too (bytes unchanged).

Atomic and resumable output:

* everything is written under ``OUT.partial/``: finished chunks of ``chunk_frames`` frames
  (``chunks/chunk-00000``, ... each a closed bag) and ``progress.json`` (input fingerprint, options, chunks and
  frames done), updated atomically after each chunk;
* when all frames are done the chunks are merged into ``OUT.partial/<name>`` which is then renamed to ``OUT`` and
  ``OUT.partial`` removed: a bag at ``OUT`` is always complete;
* ``resume=True`` continues an interrupted run from its last finished chunk (the chunk in progress at the
  interruption is redone); the input and the options must be those of the interrupted run.

Metric anchors (issue 14): ``anchor_topics`` name the recording's metric sensor topics (PointCloud2, registered
depth Image, Range; :mod:`moge2_ros.pipeline.bag_anchors`), and/or ``camera_height`` a known height above a flat
floor; each image gets the readings nearest its stamp (within ``anchor_max_age``) and the node's anchoring sets the
published metric scale (``geometry``'s ``scale_source``, ``network_scale``, ``metric_scale``, ...).  The
sensor -> camera transforms come from ``anchor_extrinsics`` or the bag's ``/tf_static`` / ``/tf``.  With the
temporal filter on, a resumed run starts the filter afresh at the resume point (the frames before it are not
re-run), so its first frames may differ slightly from an uninterrupted run's.

A corrupt or truncated input raises one :class:`~moge2_ros.bags.BagError`; ``OUT`` is not created.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from moge2_ros.anchors import MODES, AnchorConfig, FitOptions
from moge2_ros.bags import NS_PER_S, BagError
from moge2_ros.bags.sync import CameraInfoTrack, default_camera_info_topic
from moge2_ros.bags.reader import BagReader, RawMessage, open_bag
from moge2_ros.bags.typestore import CAMERA_INFO, COMPRESSED_IMAGE, IMAGE, get_typestore
from moge2_ros.bags.writer import (
    STORAGES,
    BagWriter,
    camera_info_msg,
    cloud_msg,
    geometry_msg,
    header_msg,
    image_msg,
    publish_staged,
    staging_path,
)
from moge2_ros.errors import InputError
from moge2_ros.inference.factory import PredictorOptions
from moge2_ros.io.msg_codec import distortion_note
from moge2_ros.pipeline.bag_anchors import BagAnchors
from moge2_ros.pipeline.frame import FrameConfig, FramePipeline, decode_rgb

__all__ = ["BagInferOptions", "BagInferReport", "output_topics", "run_bag_infer"]

PROGRESS_FILE: Final[str] = "progress.json"
_NUMBER: Final[re.Pattern[str]] = re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?")
_FORMAT: Final[int] = 1  # version of the progress file layout


@dataclass
class BagInferOptions:
    """What ``bag-infer`` reads and writes (everything that shapes the output; part of the resume fingerprint).

    Attributes:
        predictor: the model and its settings, built with :func:`moge2_ros.inference.load_predictor` (normals are
            not written: ``estimate_normals=False`` saves their cost).
        image_topic: Image or CompressedImage topic; None = the only image topic of the bag.
        camera_info_topic: CameraInfo of the image; None = the image's sibling ``.../camera_info`` if present.
        use_camera_info: use the CameraInfo (K, D, R, P, binning, ROI; only the depth shift is solved); False =
            estimate K.
        rectify, output_grid: as the node's parameters: a distorted camera is rectified before the model and its
            outputs are those of the rectified camera P (``rectified``) or on the raw image grid (``raw``).
        output_namespace: prefix of the output topics (``<ns>/depth/image``, ...).
        points: also write ``<ns>/points``; ``cloud_organized`` / ``cloud_stride`` / ``cloud_rgb`` as the node's
            parameters of the same names.
        every: process every n-th image message (1 = all).
        max_frames: stop after this many processed frames (None = all).
        copy_input_topics: copy every input message into the output bag.
        storage: output storage plugin (None = the input's).
        chunk_frames: frames per resumable chunk.
        anchor_topics: metric anchor topics of the input (absolute names; kind from the type: PointCloud2 ->
            points, 32FC1 / 16UC1 Image -> registered depth, Range -> range).
        anchor_extrinsics: topic -> ``[tx, ty, tz, qx, qy, qz, qw]`` sensor -> camera optical frame (metres,
            quaternion x y z w); topics not listed take their transform from the bag's ``/tf_static`` and ``/tf``.
        anchor_mode: ``scale``, ``scale_shift`` or ``complete`` (:data:`moge2_ros.anchors.MODES`).
        anchor_max_age: largest |reading stamp - image stamp| in seconds.
        anchor_temporal: the per-camera Kalman filter of the scale (False: every frame on its own).
        anchor_inlier_threshold: relative depth error below which an anchor sample is an inlier of the fit (and the
            robust fit's truncation), as the node's parameter of that name.
        camera_height: the camera's height above a flat floor in metres (a ground anchor), 0 = off.
        camera_up: the up direction in the camera optical frame (with ``camera_height``).
    """

    predictor: PredictorOptions
    image_topic: str | None = None
    camera_info_topic: str | None = None
    use_camera_info: bool = True
    rectify: bool = True
    output_grid: str = "rectified"
    output_namespace: str = "/moge2"
    points: bool = False
    cloud_organized: bool = True
    cloud_stride: int = 1
    cloud_rgb: bool = True
    every: int = 1
    max_frames: int | None = None
    copy_input_topics: bool = False
    storage: str | None = None
    chunk_frames: int = 50
    anchor_topics: tuple[str, ...] = ()
    anchor_extrinsics: dict[str, list[float]] = field(default_factory=dict)
    anchor_mode: str = "scale"
    anchor_max_age: float = 0.1
    anchor_temporal: bool = True
    anchor_inlier_threshold: float = 0.15
    camera_height: float = 0.0
    camera_up: tuple[float, float, float] = (0.0, -1.0, 0.0)

    @property
    def anchoring(self) -> bool:
        """Whether the metric scale is anchored (anchor topics or a camera height given)."""
        return bool(self.anchor_topics) or self.camera_height > 0

    def frame_config(self) -> FrameConfig:
        """The node's frame settings that give the same content: 32FC1 NaN depth, the cloud options here, and the
        CameraInfo's camera when one is given with a frame, rectified as ``rectify`` / ``output_grid`` say, and the
        anchoring when :attr:`anchoring` (raises InputError for a bad ``cloud_stride``, ``output_grid``, anchor
        mode, max age, camera height or up direction)."""
        anchors = None
        if self.anchoring:
            threshold = float(self.anchor_inlier_threshold)
            anchors = AnchorConfig(mode=self.anchor_mode, max_age_s=self.anchor_max_age,
                                   temporal=self.anchor_temporal,
                                   fit=FitOptions(trunc=threshold, inlier_threshold=threshold))
        return FrameConfig(intrinsics_source="camera_info", depth_encoding="32FC1", invalid_depth="nan",
                           cloud_organized=self.cloud_organized, cloud_stride=self.cloud_stride,
                           cloud_rgb=self.cloud_rgb, cloud_normals=False, rectify=self.rectify,
                           output_grid=self.output_grid, anchors=anchors,
                           camera_height_m=float(self.camera_height) if anchors is not None else 0.0,
                           camera_up=tuple(float(c) for c in self.camera_up))  # type: ignore[arg-type]

    def outputs(self) -> frozenset[str]:
        """The :data:`~moge2_ros.pipeline.frame.OUTPUTS` a frame writes."""
        return frozenset({"depth", "camera_info", "geometry"} | ({"points"} if self.points else set()))


@dataclass
class BagInferReport:
    """Outcome of a run."""

    output: Path
    frames: int = 0  # frames written (this run and, when resumed, the earlier ones)
    bad_frames: int = 0  # selected frames skipped because the message could not be decoded or inferred
    resumed_frames: int = 0  # frames taken over from an interrupted run
    inference_s: float = 0.0  # model time of this run's frames
    wall_s: float = 0.0  # whole run
    topics: dict[str, int] = field(default_factory=dict)  # output topic -> message count
    anchored_frames: int = 0  # frames whose scale an anchor set (this run and the earlier ones when resumed)
    fallback_frames: int = 0  # frames that kept the network's (or the filter's) scale although anchoring was on
    fallback_reasons: dict[str, int] = field(default_factory=dict)  # why (numbers as #), over this run's frames
    anchor_readings: dict[str, dict[str, int]] = field(default_factory=dict)  # topic -> used / no_reading / bad / ...
    anchor_drops: dict[str, int] = field(default_factory=dict)  # dropped anchor data by reason, this run's frames

    @property
    def inference_fps(self) -> float:
        """Frames per second of the model alone over this run's frames (0 when none)."""
        done = self.frames - self.resumed_frames
        return done / self.inference_s if self.inference_s > 0 else 0.0


def output_topics(namespace: str) -> dict[str, str]:
    """Output topic names -> types for an output namespace (the node's relative names under it)."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return {
        "depth": f"{ns}/depth/image",
        "camera_info": f"{ns}/depth/camera_info",
        "points": f"{ns}/points",
        "geometry": f"{ns}/geometry",
    }


def partial_path(out_bag: str | Path) -> Path:
    """``OUT.partial``: where a run keeps its finished chunks until the output is complete."""
    out_bag = Path(out_bag)
    return out_bag.with_name(out_bag.name + ".partial")


def _check_options(options: BagInferOptions) -> None:
    if options.every < 1:
        raise InputError(f"every: expected an integer >= 1, found {options.every}")
    if options.max_frames is not None and options.max_frames < 1:
        raise InputError(f"max_frames: expected an integer >= 1, found {options.max_frames}")
    if options.chunk_frames < 1:
        raise InputError(f"chunk_frames: expected an integer >= 1, found {options.chunk_frames}")
    if options.anchor_mode not in MODES:
        raise InputError(f"anchor_mode: expected one of {', '.join(MODES)}, found {options.anchor_mode!r}")
    if not (options.anchor_max_age > 0 and math.isfinite(options.anchor_max_age)):
        raise InputError(f"anchor_max_age: expected a finite number of seconds > 0, found {options.anchor_max_age}")
    if not (0 < options.anchor_inlier_threshold < 1):
        raise InputError(f"anchor_inlier_threshold: expected a relative error in (0, 1), found "
                         f"{options.anchor_inlier_threshold}")
    options.frame_config()
    if options.storage is not None and options.storage not in STORAGES:
        raise InputError(f"storage: expected one of {', '.join(STORAGES)}, found {options.storage!r}")


def _resolve_topics(bag: BagReader, options: BagInferOptions) -> tuple[str, str | None]:
    """The image topic and the camera_info topic to use (None = estimate the intrinsics)."""
    image_topic = options.image_topic
    if image_topic is None:
        images = [t for t, kind in bag.topics.items() if kind in (IMAGE, COMPRESSED_IMAGE) and "depth" not in t.lower()]
        if len(images) != 1:
            raise BagError(
                f"{bag.path}: {'several' if images else 'no'} colour image topics ({', '.join(images) or 'none'}; "
                "topics named *depth* are not counted); "
                "choose one with --image-topic"
            )
        image_topic = images[0]
    bag.require_topic(image_topic, (IMAGE, COMPRESSED_IMAGE), "image")
    if not options.use_camera_info:
        return image_topic, None
    info_topic = options.camera_info_topic
    if info_topic is None:
        sibling = default_camera_info_topic(image_topic)
        return image_topic, sibling if bag.topics.get(sibling) == CAMERA_INFO else None
    bag.require_topic(info_topic, (CAMERA_INFO,), "camera_info")
    return image_topic, info_topic


def _input_fingerprint(path: Path) -> list[list[Any]]:
    """Name, size and mtime of the input's files: a resumed run must read the very same recording."""
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


class _Frames:
    """The input stream with its selection (see :meth:`__iter__`)."""

    def __init__(self, bag: BagReader, image_topic: str, info_topic: str | None, options: BagInferOptions) -> None:
        self.bag, self.image_topic, self.info_topic, self.options = bag, image_topic, info_topic, options
        count = bag.message_count(image_topic)
        total = math.ceil(count / options.every)
        self.total = min(total, options.max_frames) if options.max_frames is not None else total

    def __iter__(self) -> Iterator[tuple[int, RawMessage]]:
        """``(ordinal, image)`` per selected frame in log-time order; when copying, also ``(-1, message)`` for
        every other input message."""
        topics = [] if self.options.copy_input_topics else [self.image_topic]
        image_index = 0
        selected = 0
        for raw in self.bag.raw_messages(topics):
            if raw.topic == self.image_topic:
                take = image_index % self.options.every == 0 and selected < self.total
                image_index += 1
                if take:
                    yield selected, raw
                    selected += 1
                    if selected >= self.total and not (self.options.copy_input_topics and self.options.max_frames is None):
                        return
                    continue
            yield -1, raw


def run_bag_infer(
    in_bag: str | Path,
    out_bag: str | Path,
    options: BagInferOptions,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    predictor: Any = None,
    log: Callable[[str], None] | None = None,
) -> BagInferReport:
    """Run the model over ``in_bag`` and write ``out_bag`` (see the module docstring).

    Args:
        in_bag: input bag folder or ``.mcap`` / ``.db3`` file.
        out_bag: output bag folder (must not exist unless ``overwrite``).
        options: topics, outputs, selection and model settings.
        resume: continue the interrupted run left in ``OUT.partial``.
        overwrite: replace an existing ``out_bag`` (when the new one is complete) and discard ``OUT.partial``.
        progress: show a tqdm progress bar with ETA on stderr.
        predictor: an already built :class:`~moge2_ros.inference.Predictor` (default:
            :func:`~moge2_ros.inference.load_predictor` of ``options.predictor``).
        log: where warnings go (default: ``tqdm.write`` to stderr).

    Returns:
        What was done; ``report.output`` is the complete bag.

    Raises:
        BagError: unreadable / corrupt / truncated input, missing topics, unusable partial output, existing output.
        InputError: bad options. ModelLoadError: the model cannot load.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    _check_options(options)
    in_bag, out_bag = Path(in_bag), Path(out_bag)
    partial = partial_path(out_bag)
    if out_bag.resolve() == in_bag.resolve():
        raise BagError(f"{out_bag}: the output must differ from the input")
    if out_bag.exists() and not overwrite:
        raise BagError(f"{out_bag}: exists already; choose another output or pass --overwrite")
    if partial.exists() and not (resume or overwrite):
        raise BagError(f"{partial}: left by an interrupted run; pass --resume to continue it or --overwrite to start "
                       "again")
    say = log or (lambda text: tqdm.write(text))
    report = BagInferReport(output=out_bag)

    with open_bag(in_bag) as bag:
        image_topic, info_topic = _resolve_topics(bag, options)
        anchors = _open_anchors(in_bag, bag, image_topic, options)  # checked before anything is written
        try:
            counts = _run(bag, in_bag, out_bag, partial, image_topic, info_topic, options, resume, overwrite, progress,
                          predictor, say, report, anchors)
        finally:
            if anchors is not None:
                report.anchor_readings = anchors.counts
                anchors.close()

    if out_bag.exists():  # overwrite: only now that the new bag is complete
        shutil.rmtree(out_bag) if out_bag.is_dir() else out_bag.unlink()
    publish_staged(out_bag)
    report.topics = counts
    report.wall_s = time.perf_counter() - started
    return report


def _run(bag: BagReader, in_bag: Path, out_bag: Path, partial: Path, image_topic: str, info_topic: str | None,
         options: BagInferOptions, resume: bool, overwrite: bool, progress: bool, predictor: Any,
         say: Callable[[str], None], report: BagInferReport, anchors: BagAnchors | None) -> dict[str, int]:
    """The run proper (see :func:`run_bag_infer`): progress state, frames, chunks, merge; returns the output
    topics' message counts."""
    from tqdm import tqdm

    storage = options.storage or bag.storage
    topics = output_topics(options.output_namespace)
    if not options.points:
        topics.pop("points")
    if options.copy_input_topics:
        clash = sorted(set(topics.values()) & set(bag.topics))
        if clash:
            raise BagError(f"{in_bag}: output topics {', '.join(clash)} exist in the input; choose another "
                           "--output-namespace")
    settings = {**asdict(options), "image_topic": image_topic, "camera_info_topic": info_topic, "storage": storage}
    settings = json.loads(json.dumps(settings))  # as progress.json holds it (tuples -> lists)
    fingerprint = {"format": _FORMAT, "input": str(in_bag.resolve()), "files": _input_fingerprint(in_bag),
                   "options": settings}
    chunks_dir = partial / "chunks"
    state = _start_state(partial, fingerprint, resume and not overwrite, say)
    frames = _Frames(bag, image_topic, info_topic, options)
    if frames.total == 0:
        raise BagError(f"{in_bag}: no image messages on {image_topic}")
    if info_topic is None and options.use_camera_info:
        say(f"bag-infer: no camera_info next to {image_topic}: estimating the intrinsics")
    report.resumed_frames = state["frames_done"]
    if predictor is None:
        from moge2_ros.inference.factory import load_predictor

        predictor = load_predictor(options.predictor, say=say)
    pipeline = FramePipeline(predictor, options.frame_config())
    bar = tqdm(total=frames.total, initial=state["frames_done"], unit="frame", disable=not progress,
               desc=f"bag-infer {in_bag.name}", dynamic_ncols=True)
    try:
        _process(bag, frames, state, chunks_dir, partial, storage, topics, options, pipeline, report, bar, say,
                 anchors)
    except BagError as exc:
        raise BagError(f"{exc}; {out_bag} was not written (the {state['frames_done']} frames finished so far are "
                       f"kept in {partial})") from exc
    finally:
        bar.close()
    report.frames = state["frames_done"]
    report.bad_frames = state["bad_frames"]
    report.anchored_frames = state.get("anchored_frames", 0)
    report.fallback_frames = state.get("fallback_frames", 0)
    return _merge(chunks_dir, state["chunks"], out_bag, storage)


def _open_anchors(in_bag: Path, bag: BagReader, image_topic: str, options: BagInferOptions) -> BagAnchors | None:
    """The anchor readings of the input (None without anchor topics), checked before the first frame: topic
    types, extrinsics and a transform chain from each sensor's frame to the image's frame.

    Raises:
        BagError: a malformed, missing or wrongly typed anchor topic, or no transform chain; InputError: a bad
            extrinsic.
    """
    if not options.anchor_topics:
        return None
    anchors = BagAnchors(in_bag, bag, options.anchor_topics, options.anchor_extrinsics, options.anchor_max_age)
    try:
        first = next(bag.messages([image_topic]))
        anchors.check_transforms(bag, str(first.msg.header.frame_id))
    except BaseException:
        anchors.close()
        raise
    return anchors


def _start_state(partial: Path, fingerprint: dict[str, Any], resume: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """The progress state: read from ``OUT.partial/progress.json`` (resume) or a fresh one."""
    progress_path = partial / PROGRESS_FILE
    if resume and progress_path.is_file():
        try:
            state = json.loads(progress_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BagError(f"{progress_path}: unreadable ({exc}); delete {partial} or pass --overwrite") from exc
        if state.get("fingerprint") != fingerprint:
            old = state.get("fingerprint") or {}
            differs = [k for k in ("input", "files", "options") if old.get(k) != fingerprint[k]]
            raise BagError(
                f"{partial}: cannot resume: the interrupted run had a different {' / '.join(differs) or 'format'}; "
                "rerun with the same input and options, or pass --overwrite to start again"
            )
        for name in _list_dirs(partial / "chunks"):
            if name not in state["chunks"]:
                shutil.rmtree(partial / "chunks" / name, ignore_errors=True)  # a chunk the interruption cut short
        shutil.rmtree(staging_path(partial.with_name(partial.name[: -len(".partial")])), ignore_errors=True)
        say(f"bag-infer: resuming after {state['frames_done']} frames ({len(state['chunks'])} chunks)")
        return state
    if resume:
        say(f"bag-infer: nothing to resume at {partial}: starting from the first frame")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "chunks").mkdir(parents=True)
    state = {"fingerprint": fingerprint, "chunks": [], "frames_done": 0, "bad_frames": 0, "anchored_frames": 0,
             "fallback_frames": 0}
    _write_json_atomic(progress_path, state)
    return state


def _list_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def _process(bag: BagReader, frames: _Frames, state: dict[str, Any], chunks_dir: Path, partial: Path, storage: str,
             topics: dict[str, str], options: BagInferOptions, pipeline: FramePipeline, report: BagInferReport,
             bar: Any, say: Callable[[str], None], anchors: BagAnchors | None = None) -> None:
    """Read the input once; write chunk after chunk (each closed and recorded in progress.json when full).

    Chunk c holds frames ``[c * chunk_frames, (c + 1) * chunk_frames)`` and, when copying, the input messages read
    after the previous chunk's last frame up to its own last frame (the last chunk also takes the trailing ones),
    so a resumed run rebuilds exactly the chunks a whole run would have written.
    """
    done = state["frames_done"]
    infos = CameraInfoTrack(bag, frames.info_topic) if frames.info_topic else None
    chunk_index = len(state["chunks"])
    writer: BagWriter | None = None
    chunk_frames = chunk_bad = 0
    chunk_scale = {"anchored_frames": 0, "fallback_frames": 0}
    seen = 0  # selected frames met so far in the stream
    warned_info: set[str] = set()

    def open_chunk() -> BagWriter:
        path = chunks_dir / f"chunk-{chunk_index:05d}"
        shutil.rmtree(path, ignore_errors=True)
        return BagWriter(path, storage).open()

    def close_chunk(chunk: BagWriter) -> None:
        nonlocal chunk_index, chunk_frames, chunk_bad
        chunk.close()
        state["chunks"].append(chunk.path.name)
        state["frames_done"] += chunk_frames
        state["bad_frames"] += chunk_bad
        for key, value in chunk_scale.items():
            state[key] = state.get(key, 0) + value
            chunk_scale[key] = 0
        _write_json_atomic(partial / PROGRESS_FILE, state)
        chunk_index += 1
        chunk_frames = chunk_bad = 0

    try:
        for ordinal, raw in frames:
            if ordinal < 0:  # not a selected frame: copied when past the resume point
                if options.copy_input_topics and seen >= done:
                    writer = writer or open_chunk()
                    _copy(bag, writer, raw)
                continue
            seen = ordinal + 1
            if ordinal < done:  # written by the interrupted run
                continue
            writer = writer or open_chunk()
            if options.copy_input_topics:
                _copy(bag, writer, raw)
            outcome = _infer_frame(bag, writer, raw, infos, topics, options, pipeline, report, warned_info, say,
                                   anchors)
            if outcome is None:
                chunk_bad += 1
            elif outcome:
                chunk_scale[outcome] += 1
            chunk_frames += 1
            bar.update(1)
            if chunk_frames >= options.chunk_frames and seen < frames.total:
                close_chunk(writer)
                writer = None
        if writer is not None:
            close_chunk(writer)
            writer = None
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def _copy(bag: BagReader, writer: BagWriter, raw: RawMessage) -> None:
    """Copy one input message (bytes unchanged) with its type's definition: the package's, or the bag's own for a
    type this package does not know or defines differently (an older MonocularGeometry)."""
    if raw.msgtype in get_typestore().types and not bag.definition_differs(raw.topic):
        writer.add_topic(raw.topic, raw.msgtype)
    else:
        msgtype, msgdef, digest = bag.connection_definition(raw.topic)
        if not (msgdef and digest):
            raise BagError(f"{bag.path}: cannot copy topic {raw.topic}: its type {raw.msgtype} is unknown here and "
                           "the bag holds no definition of it")
        writer.add_topic(raw.topic, msgtype, msgdef=msgdef, digest=digest)
    writer.write_raw(raw.topic, raw.msgtype, raw.data, raw.log_time_ns)


def _infer_frame(bag: BagReader, writer: BagWriter, raw: RawMessage, infos: CameraInfoTrack | None,
                 topics: dict[str, str], options: BagInferOptions, pipeline: FramePipeline, report: BagInferReport,
                 warned_info: set[str], say: Callable[[str], None], anchors: BagAnchors | None = None) -> str | None:
    """Run one frame through the pipeline and write its outputs.

    Returns:
        None (nothing written) for an undecodable or rejected frame; else ``"anchored_frames"`` /
        ``"fallback_frames"`` with anchoring on (whether an anchor set the frame's scale), ``""`` without.
    """
    msg = bag.deserialize(raw)
    stamp = bag.stamp_of(raw)
    assert stamp is not None
    info = infos.at(stamp) if infos is not None else None
    frame_id = str(msg.header.frame_id)
    readings = anchors.readings(stamp, frame_id) if anchors is not None else []
    try:
        rgb = decode_rgb(msg, pipeline.predictor.pixel_limit())
        frame = pipeline.process(rgb, options.outputs(), camera_info=info, anchors=readings, stamp=stamp / NS_PER_S,
                                 camera_id=frame_id)
    except InputError as exc:
        say(f"bag-infer: skipped the frame {raw.topic} at stamp {stamp} ns: {exc}")
        return None
    assert frame is not None and frame.depth is not None and frame.camera_info is not None
    assert frame.geometry is not None
    if frame.intrinsics_error is not None and infos is not None:
        text = str(frame.intrinsics_error)
        if text not in warned_info:
            warned_info.add(text)
            instead = frame.camera_note or "estimating the intrinsics"
            say(f"bag-infer: ignoring camera_info {infos.topic} ({text}): {instead}")
    if frame.distortion_ignored and info is not None and "distortion" not in warned_info:
        try:
            note = distortion_note(info)
        except InputError:  # a malformed D: the CameraInfo check reports what is wrong with the message
            note = None
        if note is not None:  # once per run, rectify off: the images are used as if they were rectified
            warned_info.add("distortion")
            say(f"bag-infer: {note}")
    report.inference_s += frame.inference_s
    outcome = ""
    if frame.scale is not None:
        decision = frame.scale
        outcome = "anchored_frames" if decision.anchored else "fallback_frames"
        if not decision.anchored:
            for reason in filter(None, (r.strip() for r in decision.reason.split(";"))):
                reason = _NUMBER.sub("#", reason)  # one entry per kind of reason, not per value
                report.fallback_reasons[reason] = report.fallback_reasons.get(reason, 0) + 1
        for reason, count in decision.dropped.items():
            if count and reason != "subsampled":
                report.anchor_drops[reason] = report.anchor_drops.get(reason, 0) + int(count)

    header = header_msg(stamp, frame_id)
    log_time = raw.log_time_ns
    writer.write(topics["depth"], image_msg(header, frame.depth), log_time)
    writer.write(topics["camera_info"], camera_info_msg(header, frame.camera_info), log_time)
    if frame.cloud is not None:
        writer.write(topics["points"], cloud_msg(header, frame.cloud), log_time)
    writer.write(topics["geometry"], geometry_msg(header, frame.geometry), log_time)
    return outcome


def _merge(chunks_dir: Path, chunks: list[str], out_bag: Path, storage: str) -> dict[str, int]:
    """Concatenate the finished chunks (in order, bytes unchanged) into the staged output bag."""
    staged = staging_path(out_bag)
    shutil.rmtree(staged, ignore_errors=True)
    with BagWriter(staged, storage) as writer:
        for name in chunks:
            with open_bag(chunks_dir / name) as chunk:
                for topic in chunk.topics:
                    msgtype, msgdef, digest = chunk.connection_definition(topic)
                    known = msgtype in get_typestore().types
                    writer.add_topic(topic, msgtype, None if known else msgdef, None if known else digest)
                for raw in chunk.raw_messages([]):
                    writer.write_raw(raw.topic, raw.msgtype, raw.data, raw.log_time_ns)
        counts = dict(writer.counts)
    return counts
