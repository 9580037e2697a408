#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA device, run the tests marked `gpu`, the CUDA rows of the backend
# benchmark and the node end to end at 30 Hz, and write every table as a file. Sized to finish within ~8 minutes
# on an H100-class GPU (each step has its own time limit; --quick for a ~3-minute subset).
#
#   bash bench/gpu_check.sh [--out DIR] [--python PY] [--setup] [--quick] [--steps tests,backends,node]
#
#   --out DIR      where the tables go (default: gpu_check_out/ in the repository)
#   --python PY    interpreter with a CUDA build of torch (default: .venv/bin/python when it sees a GPU, else
#                  python3 from PATH, e.g. a GPU image's or JetPack's own torch). The package is used from this
#                  checkout through PYTHONPATH: nothing is installed into that interpreter.
#   --setup        first create .venv with a CUDA torch (scripts/setup.sh with MOGE2_TORCH_PIP_ARGS, default
#                  "torch==2.13.0", the PyPI build, which is a CUDA build on Linux x86-64) plus the `gpu` extra;
#                  needs the package registries. Without it nothing is downloaded.
#   --quick        ViT-S and ViT-L at 1200 / 3600 tokens, eager fp16 and bf16 only, no compile
#   --steps LIST   comma-separated subset of: tests, backends, node (default: all three)
#
# Without a CUDA device it says so in one line and exits 0 with nothing measured (CI runs that path);
# --require-gpu makes that exit 3 instead. Files written: machine.txt, gpu_tests.txt, backends_eager.md/.json,
# backends_compiled.md/.json, backends_onnx.md/.json (where ONNX Runtime has the CUDA / TensorRT providers),
# node_e2e.md (needs rclpy), summary.txt. Record the numbers, with the card's name, in docs/BENCHMARKS.md.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/gpu_check_out"
PY=""
SETUP=0
QUICK=0
REQUIRE=0
STEPS="tests,backends,node"

say() { printf '[gpu_check] %s\n' "$*"; }
die() { printf '[gpu_check] error: %s\n' "$*" >&2; exit 2; }
usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT="$2"; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PY="$2"; shift 2 ;;
        --setup) SETUP=1; shift ;;
        --quick) QUICK=1; shift ;;
        --require-gpu) REQUIRE=1; shift ;;
        --steps) [ $# -ge 2 ] || die "--steps needs a list, e.g. tests,backends"; STEPS="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
for step in ${STEPS//,/ }; do
    case "$step" in tests|backends|node) ;; *) die "unknown step '$step' in --steps (tests, backends, node)" ;; esac
done
want() { case ",$STEPS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ "$SETUP" = 1 ]; then
    say "setting up .venv with a CUDA torch (${MOGE2_TORCH_PIP_ARGS:-torch==2.13.0}) and the gpu extra"
    MOGE2_TORCH_PIP_ARGS="${MOGE2_TORCH_PIP_ARGS:-torch==2.13.0}" \
        MOGE2_EXTRAS="${MOGE2_EXTRAS:-test,hub,exr,bags,cameras,gpu}" bash "$ROOT/scripts/setup.sh" \
        || die "scripts/setup.sh failed"
fi

sees_gpu() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ] && sees_gpu "$ROOT/.venv/bin/python"; then
        PY="$ROOT/.venv/bin/python"
    elif command -v python3 >/dev/null 2>&1 && sees_gpu python3; then
        PY="$(command -v python3)"
    else
        PY="${ROOT}/.venv/bin/python"; [ -x "$PY" ] || PY="$(command -v python3 || echo python3)"
    fi
fi
"$PY" -c 'import torch' >/dev/null 2>&1 || die "$PY cannot import torch (give --python, or --setup)"
if ! sees_gpu "$PY"; then
    info="$("$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")' 2>&1)"
    say "no CUDA device visible to $PY ($info): nothing to measure, skipped"
    [ "$REQUIRE" = 1 ] && exit 3
    exit 0
fi

mkdir -p "$OUT" || die "cannot create $OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$ROOT"
status=0
summary="$OUT/summary.txt"
: > "$summary"
note() { say "$*"; printf '%s\n' "$*" >> "$summary"; }

{ nvidia-smi 2>/dev/null || true
  "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"torch {torch.__version__} CUDA {torch.version.cuda}: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")'
} > "$OUT/machine.txt" 2>&1
note "device: $(tail -n 1 "$OUT/machine.txt")"

run_step() {  # $1 name, $2 limit (s), $3 output file, rest: command
    local name="$1" limit="$2" file="$3"; shift 3
    local start=$SECONDS rc=0
    timeout --signal=INT --kill-after=20 "$limit" "$@" > "$file" 2> "$file.log" || rc=$?
    if [ "$rc" = 0 ]; then
        note "$name: done in $((SECONDS - start)) s -> $(basename "$file")"
    else
        status=1
        note "$name: FAILED (exit $rc after $((SECONDS - start)) s; limit ${limit} s): $(tail -n 1 "$file.log" 2>/dev/null)"
    fi
}

if want tests; then
    files=$(grep -rl "mark.gpu" test --include='*.py' | sort | tr '\n' ' ')
    run_step "tests marked gpu" 150 "$OUT/gpu_tests.txt" "$PY" -m pytest -q -m gpu -p no:cacheprovider $files
fi

if want backends; then
    if [ "$QUICK" = 1 ]; then
        models="vits vitl"; tokens="1200 3600"; precisions="fp16 bf16"
    else
        models="vits vitb vitl"; tokens="1200 2400 3600"; precisions="fp32 fp16 bf16"
    fi
    common=(--device cuda --repeats 20 --warmup 3 --no-absrel)
    run_step "backends eager ($models x $tokens x $precisions)" 240 "$OUT/backends_eager.md" \
        "$PY" bench/bench_backends.py "${common[@]}" --models $models --tokens $tokens --variants eager \
        --precisions $precisions --json "$OUT/backends_eager.json"
    if [ "$QUICK" = 0 ]; then
        run_step "backends compiled + CUDA graphs (ViT-S 1200, ViT-L 3600, fp16)" 150 "$OUT/backends_compiled.md" \
            bash -c "'$PY' bench/bench_backends.py ${common[*]} --no-flops --models vits --tokens 1200 \
                     --variants compiled cuda-graphs --precisions fp16 --json '$OUT/backends_compiled_s.json' &&
                     '$PY' bench/bench_backends.py ${common[*]} --no-flops --models vitl --tokens 3600 \
                     --variants compiled cuda-graphs --precisions fp16 --json '$OUT/backends_compiled_l.json'"
    fi
    ort=$("$PY" -c 'import onnxruntime as o; p = o.get_available_providers(); print(" ".join(v for v, n in (("ort-cuda", "CUDAExecutionProvider"), ("ort-tensorrt", "TensorrtExecutionProvider")) if n in p))' 2>/dev/null || true)
    if [ -n "$ort" ]; then
        run_step "backends ONNX Runtime ($ort; ViT-S 1200, ViT-L 3600)" 150 "$OUT/backends_onnx.md" \
            "$PY" bench/bench_backends.py "${common[@]}" --no-flops --models vits vitl --tokens 1200 3600 \
            --variants $ort --precisions fp32 fp16 --json "$OUT/backends_onnx.json"
    else
        note "backends ONNX Runtime: skipped (no CUDA or TensorRT execution provider in this onnxruntime; install the gpu extra)"
    fi
fi

if want node; then
    if "$PY" -c 'import rclpy, sensor_msgs' >/dev/null 2>&1; then
        run_step "node end to end at 30 Hz (reference model, 1200 tokens)" 120 "$OUT/node_e2e.md" \
            "$PY" bench/bench_node.py --model "$ROOT/../shared/reference/public/model.pt" --tokens 1200 \
            --repeats 20 --e2e-seconds 20 --e2e-rate 30 --soak-seconds 0
    else
        note "node end to end: skipped (rclpy is not importable by $PY; run scripts/setup.sh, or source a ROS 2 install)"
    fi
fi

say "tables in $OUT (summary.txt lists each step)"
exit "$status"
