"""The ``moge2-ros`` command: the top parser, the subcommand modules, dispatch and exit statuses.

Each subcommand lives with the layer that does its work, in that layer's ``cli.py`` (``add_parsers(sub)``
registers its parsers with ``set_defaults(handler=...)``); ``moge2-ros COMMAND --help`` documents it:

* :mod:`moge2_ros.pipeline.cli`: ``infer`` (images -> depth, points, intrinsics files), ``bag-infer``
  (a rosbag2 recording -> a bag with the node's outputs);
* :mod:`moge2_ros.ros.cli`: ``demo`` (the demo camera and ``moge2_node``, monitored), ``monitor`` (a running
  node's outputs: rates, latency, depth range, snapshots);
* :mod:`moge2_ros.backends.cli`: ``export-onnx``;
* :mod:`moge2_ros.eval.cli`: ``eval`` (benchmarks), ``bag-eval`` (predicted depth in a bag against ground truth);
* :mod:`moge2_ros.refine.cli`: ``refine`` (real depth labels filtered and completed with a model);
* :mod:`moge2_ros.train.cli`: ``train``, ``finetune``, ``make-demo-model`` (an untrained tiny model for tests);
* :mod:`moge2_ros.data.cli`: ``make-synthetic``, ``make-bag``, ``make-example-image``.

Every expected failure (bad argument, missing or unreadable file, bad model) is reported as ONE line
``moge2-ros: error: ...`` on stderr. Exit status: 0 success, 1 runtime error (model, inference, unreadable
image, file system), 2 usage error (bad arguments, missing input path), 130 interrupted. ``--debug`` shows
tracebacks of unexpected errors. The subcommand modules import nothing heavy at module level (torch, onnx,
rosbags, rclpy load inside the handlers), so ``moge2-ros --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from moge2_ros.cli_args import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, PROG, error, os_error_text
from moge2_ros.errors import Moge2RosError, UsageError

__all__ = ["EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "PROG", "SUBCOMMAND_MODULES", "build_parser", "main"]

#: The modules that add subcommands, in the order ``--help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "moge2_ros.pipeline.cli",
    "moge2_ros.ros.cli",
    "moge2_ros.backends.cli",
    "moge2_ros.eval.cli",
    "moge2_ros.refine.cli",
    "moge2_ros.train.cli",
    "moge2_ros.data.cli",
)


class _Parser(argparse.ArgumentParser):
    """argparse parser whose errors become :class:`UsageError` (one line, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``moge2-ros`` argument parser with the subcommands of :data:`SUBCOMMAND_MODULES`."""
    from moge2_ros import __version__

    parser = _Parser(
        prog=PROG,
        description="MoGe-2 monocular metric geometry: depth, point clouds and intrinsics from single images.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parsers(sub)
    return parser


def _report(message: str) -> None:
    print(error(message), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``moge2-ros`` command.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 success, 1 runtime error, 2 usage error, 130 interrupted (errors are reported on stderr
        in one line).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(args.handler(args))
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    except UsageError as exc:
        _report(str(exc))
        return EXIT_USAGE
    except Moge2RosError as exc:
        _report(str(exc))
        return EXIT_RUNTIME
    except OSError as exc:
        _report(os_error_text(exc))
        return EXIT_RUNTIME
    except ImportError as exc:  # a dependency missing from this environment (e.g. a colcon workspace)
        if debug:
            raise
        if (exc.name or "").split(".")[0] in ("", "moge2_ros"):  # our own import broke: a bug
            _report(f"unexpected {type(exc).__name__}: {exc} (this is a bug; rerun with --debug for the traceback)")
            return EXIT_RUNTIME
        _report(f"missing Python package '{exc.name or exc}': install the dependencies of moge2_ros into this "
                "environment (pip install -e . from the repository, or bash scripts/setup.sh)")
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        _report("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - last resort: one line instead of a traceback, unless --debug
        if debug:
            raise
        _report(f"unexpected {type(exc).__name__}: {exc} (this is a bug; rerun with --debug for the traceback)")
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
