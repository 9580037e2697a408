#!/usr/bin/env bash
# The main job: set up, then run moge2_node on the rendered demo camera stream and print what it measures.
#
#   bash scripts/demo.sh [moge2-ros demo arguments, e.g. --duration 60 --model path/to/model.pt]
#
# Starts demo_camera and moge2_node (namespace /camera) as processes, says what it waits for until the first
# depth image (usually 2-4 s), then watches their topics for --duration seconds (default 20: rates, latency,
# depth AbsRel against the rendered ground truth) and stops both. Without --model the node runs the bundled
# demo model (1.5 M parameters, trained on synthetic scenes only: docs/DEMO_MODEL.md), a demo rather than a
# substitute for the official weights. Real use: --model Ruicheng/moge-2-vitl-normal (or a downloaded model.pt).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/moge2-ros" demo "$@"
