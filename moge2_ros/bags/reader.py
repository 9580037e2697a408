"""Read rosbag2 recordings (sqlite3 or MCAP; a bag folder or a bare ``.db3`` / ``.mcap`` file) with ``rosbags``.

Every failure of the storage layer (missing file, unreadable metadata, corrupt or truncated database or MCAP,
undecodable message) surfaces as ONE :class:`~moge2_ros.bags.BagError` that names the bag, and where it can the
topic and time, instead of the zoo of exceptions the storage libraries raise (sqlite3, struct, zstd, lz4, ...).

Times are integer nanoseconds: ``stamp_ns`` is the message's ``header.stamp`` (capture time, what outputs carry),
``log_time_ns`` the time the recorder received it (the bag's own index).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from moge2_ros.bags import NS_PER_S, BagError
from moge2_ros.bags.typestore import get_typestore

try:  # rosbags >= 0.10
    from rosbags.serde import SerdeError
except ImportError:  # pragma: no cover
    SerdeError = ValueError  # type: ignore[misc,assignment]

__all__ = ["BagMessage", "BagReader", "RawMessage", "open_bag"]

_STORAGE_SUFFIXES: Final[dict[str, str]] = {".mcap": "mcap", ".db3": "sqlite3"}


@dataclass(frozen=True)
class RawMessage:
    """One serialised (CDR) message as stored in the bag."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass(frozen=True)
class BagMessage:
    """One deserialised message.

    Attributes:
        topic: topic name.
        stamp_ns: ``header.stamp`` in ns since the epoch, or None for a type without a header.
        log_time_ns: receive time recorded in the bag, ns.
        msgtype: ROS 2 type name, e.g. ``sensor_msgs/msg/Image``.
        msg: the ``rosbags`` message object (a dataclass with the ROS field names).
    """

    topic: str
    stamp_ns: int | None
    log_time_ns: int
    msgtype: str
    msg: Any


def _storage_errors() -> tuple[type[BaseException], ...]:
    """Exceptions the storage layer raises on damaged input (never on our bugs: no TypeError/AttributeError)."""
    import sqlite3
    import zlib

    from rosbags.rosbag2 import ReaderError

    errors: list[type[BaseException]] = [ReaderError, sqlite3.Error, struct.error, zlib.error, EOFError, ValueError,
                                         IndexError, KeyError, UnicodeDecodeError, OSError, AssertionError,
                                         OverflowError, MemoryError]
    try:
        import apsw  # rosbags' sqlite3 driver

        errors.append(apsw.Error)
    except ImportError:
        pass
    try:
        from zstandard import ZstdError

        errors.append(ZstdError)
    except ImportError:
        pass
    try:
        from lz4.frame import LZ4FrameError  # type: ignore[attr-defined]

        errors.append(LZ4FrameError)
    except (ImportError, AttributeError):
        pass
    return tuple(errors)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def stamp_from_cdr(data: bytes | memoryview) -> int:
    """``header.stamp`` of a CDR message whose first field is a ``std_msgs/Header``, without deserialising it.

    CDR layout: 4 bytes of encapsulation (byte 1: 0 big-endian, 1 little-endian), then ``int32 sec`` and
    ``uint32 nanosec``.

    Raises:
        ValueError: fewer than 12 bytes or an unknown encapsulation.
    """
    if len(data) < 12:
        raise ValueError(f"expected a CDR message of at least 12 bytes, found {len(data)}")
    kind = data[1]
    if data[0] != 0 or kind not in (0, 1):
        raise ValueError(f"expected a plain CDR encapsulation (00 00 or 00 01), found {bytes(data[:2]).hex()}")
    sec, nanosec = struct.unpack_from("<iI" if kind == 1 else ">iI", data, 4)
    return sec * NS_PER_S + nanosec


class BagReader:
    """An open rosbag2 recording. Use :func:`open_bag` (a context manager).

    Attributes:
        path: the bag folder or storage file.
        storage: ``"sqlite3"`` or ``"mcap"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader: Any = None
        self.storage = ""
        self._errors = _storage_errors()
        self._header_first: dict[str, bool] = {}
        self._own_stores: dict[str, Any] = {}  # topic -> the bag's own typestore, where its definition differs
        self._differs: dict[str, bool] = {}

    # -------------------------------------------------------------------------------------------- lifecycle
    def open(self) -> "BagReader":
        """Open the bag and read its metadata.

        Raises:
            BagError: missing path, folder without ``metadata.yaml``, unknown storage, corrupt or truncated file.
        """
        from rosbags.rosbag2 import Reader

        path = self.path
        if not path.exists():
            raise BagError(f"{path}: no such bag (expected a rosbag2 folder or a .mcap / .db3 file)")
        if path.is_dir():
            if not (path / "metadata.yaml").is_file():
                files = sorted(p.name for p in path.iterdir() if p.suffix in _STORAGE_SUFFIXES)
                hint = (f"; it holds {', '.join(files)}: the recording was probably interrupted, pass the storage "
                        "file itself or run 'ros2 bag reindex'") if files else ""
                raise BagError(f"{path}: not a rosbag2 folder (no metadata.yaml){hint}")
        elif path.suffix not in _STORAGE_SUFFIXES:
            raise BagError(f"{path}: expected a rosbag2 folder or a .mcap / .db3 file, found a {path.suffix or 'plain'} file")
        try:
            reader = Reader(path)
            reader.open()
        except self._errors as exc:
            raise BagError(f"{path}: cannot open the bag, it is corrupt or truncated ({_describe(exc)})") from exc
        self._reader = reader
        identifiers = {type(s).__name__ for s in getattr(reader.storage, "storages", [reader.storage])}
        self.storage = "mcap" if any("Mcap" in n for n in identifiers) else "sqlite3"
        return self

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                reader.close()
            except self._errors:
                pass

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _require_open(self) -> Any:
        if self._reader is None:
            raise BagError(f"{self.path}: the bag is not open")
        return self._reader

    # -------------------------------------------------------------------------------------------- metadata
    @property
    def topics(self) -> dict[str, str]:
        """Topic name -> ROS 2 message type (e.g. ``sensor_msgs/msg/Image``), sorted by name."""
        return {topic: info.msgtype or "?" for topic, info in self._require_open().topics.items()}

    def message_count(self, topic: str) -> int:
        """Number of messages of ``topic`` according to the bag's metadata (0 for an unknown topic)."""
        info = self._require_open().topics.get(topic)
        return int(info.msgcount) if info is not None else 0

    @property
    def start_time_ns(self) -> int:
        return int(self._require_open().start_time)

    @property
    def end_time_ns(self) -> int:
        return int(self._require_open().end_time)

    def require_topic(self, topic: str, msgtypes: Collection[str], role: str) -> str:
        """The type of ``topic``, which must exist with one of ``msgtypes``.

        Raises:
            BagError: naming the topics of the bag (with their types) that would fit.
        """
        topics = self.topics
        if topic not in topics:
            fitting = [f"{name} ({kind})" for name, kind in topics.items() if kind in msgtypes]
            listing = ", ".join(fitting) if fitting else "none of type " + " / ".join(msgtypes)
            raise BagError(f"{self.path}: no {role} topic {topic!r} in the bag; candidates: {listing}")
        msgtype = topics[topic]
        if msgtype not in msgtypes:
            raise BagError(f"{self.path}: {role} topic {topic} is {msgtype}, expected {' or '.join(msgtypes)}")
        if self.message_count(topic) == 0:
            raise BagError(f"{self.path}: {role} topic {topic} has no messages")
        return msgtype

    # -------------------------------------------------------------------------------------------- messages
    def raw_messages(
        self, topics: Collection[str], start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[RawMessage]:
        """Serialised messages of ``topics`` (all topics when empty) in log-time order, ``start_ns <= t < stop_ns``.

        Raises:
            BagError: the storage is corrupt or truncated (raised when the damage is reached, naming the last
                good message).
        """
        reader = self._require_open()
        wanted = set(topics)
        connections = [c for c in reader.connections if not wanted or c.topic in wanted]
        if not connections:
            return
        last = "before the first message"
        count = 0
        per_topic: dict[str, int] = {}
        iterator = reader.messages(connections=connections, start=start_ns, stop=stop_ns)
        while True:
            try:
                connection, log_time, data = next(iterator)
            except StopIteration:
                if start_ns is None and stop_ns is None:
                    self._check_counts(per_topic, {c.topic for c in connections})
                return
            except self._errors as exc:
                raise BagError(
                    f"{self.path}: the bag is corrupt or truncated: reading failed after {count} messages, {last} "
                    f"({_describe(exc)})"
                ) from exc
            count += 1
            per_topic[connection.topic] = per_topic.get(connection.topic, 0) + 1
            last = f"last good message on {connection.topic} at log time {log_time} ns"
            yield RawMessage(connection.topic, connection.msgtype, int(log_time), bytes(data))

    def _check_counts(self, read: dict[str, int], topics: set[str]) -> None:
        """A full read must deliver every message the metadata announces (a damaged MCAP chunk can vanish silently)."""
        for topic in sorted(topics):
            expected = self.message_count(topic)
            found = read.get(topic, 0)
            if found < expected:
                raise BagError(
                    f"{self.path}: the bag is corrupt or truncated: topic {topic} has {expected} messages according to "
                    f"its metadata but only {found} could be read"
                )

    def has_header(self, msgtype: str) -> bool:
        """Whether ``msgtype``'s first field is a ``std_msgs/Header`` (so :func:`stamp_from_cdr` applies)."""
        if msgtype not in self._header_first:
            fields = get_typestore().fielddefs.get(msgtype)
            first = fields[1][0] if fields and fields[1] else None
            self._header_first[msgtype] = bool(first and first[0] == "header" and first[1][1] == "std_msgs/msg/Header")
        return self._header_first[msgtype]

    def stamp_of(self, raw: RawMessage) -> int | None:
        """``header.stamp`` of a raw message in ns (None for a type without a header).

        Raises:
            BagError: a message too short to hold a header.
        """
        if not self.has_header(raw.msgtype):
            return None
        try:
            return stamp_from_cdr(raw.data)
        except ValueError as exc:
            raise BagError(f"{self.path}: {raw.topic} message at log time {raw.log_time_ns} ns: {exc}") from exc

    def definition_differs(self, topic: str) -> bool:
        """Whether ``topic``'s type as recorded in the bag (its RIHS01 hash) differs from the shared typestore's
        type of the same name, e.g. a ``MonocularGeometry`` written before the message gained fields.  False for a
        topic the bag does not record (a message decoded with this package's types)."""
        if topic not in self._differs:
            try:
                msgtype, _, digest = self.connection_definition(topic)
            except BagError:
                self._differs[topic] = False
                return False
            store = get_typestore()
            differs = False
            if digest and msgtype in store.types:
                try:
                    differs = store.hash_rihs01(msgtype) != digest
                except Exception:  # noqa: BLE001 - rosbags raises assorted errors for types it cannot hash
                    differs = False
            self._differs[topic] = differs
        return self._differs[topic]

    def _store_of(self, topic: str) -> Any:
        """The typestore to decode ``topic`` with: the shared one, or (for a type whose recorded definition differs)
        a store built from the bag's own definition, so older recordings stay readable."""
        if topic in self._own_stores:
            return self._own_stores[topic]
        store = get_typestore()
        if self.definition_differs(topic):
            from rosbags.typesys import Stores, get_types_from_msg
            from rosbags.typesys import get_typestore as _rosbags_typestore

            msgtype, msgdef, _ = self.connection_definition(topic)
            try:
                own = _rosbags_typestore(Stores.ROS2_JAZZY)
                own.register(get_types_from_msg(msgdef or "", msgtype))
                store = own
            except Exception:  # noqa: BLE001 - an unparsable definition: decode with the shared store
                pass
        self._own_stores[topic] = store
        return store

    def deserialize(self, raw: RawMessage) -> Any:
        """The ``rosbags`` message object of a raw message (decoded with the bag's own definition of its type when
        that differs from this package's: the object then has the recorded fields only).

        Raises:
            BagError: unknown type or corrupt message bytes.
        """
        store = self._store_of(raw.topic)
        if raw.msgtype not in store.types:
            raise BagError(f"{self.path}: topic {raw.topic} has type {raw.msgtype}, which this tool cannot decode")
        try:
            return store.deserialize_cdr(raw.data, raw.msgtype)
        except (SerdeError, *self._errors) as exc:
            raise BagError(
                f"{self.path}: {raw.topic} message at log time {raw.log_time_ns} ns is corrupt ({_describe(exc)})"
            ) from exc

    def messages(
        self, topics: Collection[str], start_ns: int | None = None, stop_ns: int | None = None
    ) -> Iterator[BagMessage]:
        """Deserialised messages of ``topics`` in log-time order (see :meth:`raw_messages`).

        Raises:
            BagError: corrupt or truncated storage, corrupt message, unknown type.
        """
        for raw in self.raw_messages(topics, start_ns, stop_ns):
            yield BagMessage(raw.topic, self.stamp_of(raw), raw.log_time_ns, raw.msgtype, self.deserialize(raw))

    def connection_definition(self, topic: str) -> tuple[str, str | None, str | None]:
        """``(msgtype, msgdef text or None, RIHS01 digest or None)`` of ``topic`` as recorded (to copy it)."""
        for connection in self._require_open().connections:
            if connection.topic == topic:
                text = connection.msgdef.data if getattr(connection.msgdef, "data", "") else None
                return connection.msgtype, text, connection.digest or None
        raise BagError(f"{self.path}: no topic {topic!r}")


def open_bag(path: str | Path) -> BagReader:
    """Open a rosbag2 recording: a bag folder (``metadata.yaml`` + ``.db3``/``.mcap`` files) or a bare
    ``.mcap`` / ``.db3`` file. Use as ``with open_bag(path) as bag: ...``.

    Raises:
        BagError: missing, corrupt or truncated bag (the message names the path).
    """
    return BagReader(path).open()
