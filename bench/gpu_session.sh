#!/usr/bin/env bash
# The GPU checks of issue #20 as one command for a GPU machine lent for a few minutes (here: 15 minutes of device
# time a session, start-up included, 10 a command). Most important first, each under its own time limit (the
# four required steps' limits add up to the total budget), so a slow step cannot take the time of the ones after it:
#   1. bench/stylegan2_speed.py --cuda-only --profile: s/kimg + peak memory of auto 256, fp32 and fp16 blocks, its
#      fp32 step against the reference path and under the profiler, the modulated-conv forms over its G's layers,
#      then config-f like auto (each figure saved as it ends)
#   2. bench/train_step.py --device cuda: DCGAN 64x64 eager vs compile reduce-overhead vs `graph: true` vs the
#      textbook loop
#   3. tests/test_cuda.py: fp16 StyleGAN2 300 steps, CUDA-graph replay vs eager, fp32 CUDA vs CPU, AMP x models
#   4. bench/gpu.py --profile: DCGAN img/s, fp32 and bf16, eager, reduce-overhead, the whole step as one CUDA graph
#      (`graph: true`) and that with torch.compile's kernels; the fp32 steps profiled (fp16 ran on the H200 of
#      2026-12-04: slower than fp32 both ways; bf16, no scaler, has never run compiled; `graph` never ran at all)
#   5. optional, only in what the steps above left of the budget: bench/penalty_speed.py --device cuda (the DCGAN
#      family's D under R1 / WGAN-GP, facegan.ops.conv vs nn.Conv2d); not run when under 20 s are left, and
#      neither that nor a cut at its limit fails the run
#
#   bash bench/gpu_session.sh wheels   # here, once: the Python packages facegan needs that the device image lacks
#                                      # (pydantic and its four dependencies, the versions of .venv) into .whl/
#                                      # (git-ignored; the device tool takes it with carry: [".whl"],
#                                      # command "bash bench/gpu_session.sh run", timeout_s 600)
#   bash bench/gpu_session.sh run      # on the GPU machine: logs and JSON into $OUT (else bench_out/gpu)
#
# `run` runs facegan from src/ without installing it: it needs a Python with torch (CUDA), numpy, Pillow, PyYAML,
# pytest, tqdm and pydantic (the lent H200's image, Python 3.12, has all but pydantic); PYTHON picks the
# interpreter. GPU_SESSION_BUDGET (seconds, default 570) bounds the whole run; a step cut short or skipped makes
# it exit 1 (the optional fifth only when it fails). First run on a lent H200 on 2026-12-04 (docs/benchmarks.md):
# the steps took 210 (cut), 37, 95, 38 and 19 s, so StyleGAN2's limit went up (it now also times the reference
# path on CUDA and profiles the auto config) and the others' down; DCGAN's went up 5 s for its profile (two
# profiled rounds of 50 steps), train_step's down 5 s; test_cuda's up 10 s (95 s of 110 then, and one more test
# now), StyleGAN2's down 10 s (its last part, config-f fp16, is the one a cut loses). On 2026-12-05 DCGAN's went up
# 30 s (four more sides: `graph` and `graph + compile default`, fp32 and bf16, two of them compiled) and test_cuda's
# 10 s (two graph tests), StyleGAN2's down 40 s.
set -uo pipefail
cd "$(dirname "$0")/.."

wheels() {
    local py=.venv/bin/python txt pins=()
    [ -x "$py" ] || py=python3
    # the versions the test suite ran with here
    txt=$("$py" - <<'EOF'
import importlib.metadata as md
for name in ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions"):
    print(f"{name}=={md.version(name)}")
EOF
    ) || { echo "gpu_session: cannot read the pinned versions from $py (run make dev first)" >&2; return 1; }
    mapfile -t pins <<<"$txt"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${pins[@]}"
}

run() {
    local out=${OUT:-bench_out/gpu} py=${PYTHON:-python3} end=$((SECONDS + ${GPU_SESSION_BUDGET:-570})) rc=0
    mkdir -p "$out"
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl || { echo "gpu_session: installing .whl/ failed" >&2; return 1; }
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    # the device tool brings back at most 8 files from $OUT: summary.txt (this line first), 5 logs, 2 JSON
    "$py" - <<'EOF' 2>&1 | sed 's/^/machine: /' | tee "$out/summary.txt"
import torch, pydantic
if not torch.cuda.is_available():
    raise SystemExit("gpu_session: no CUDA device here (this script is for a lent GPU machine)")
p = torch.cuda.get_device_properties(0)
print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs; torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, cudnn {torch.backends.cudnn.version()}; pydantic {pydantic.VERSION}")
EOF
    [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
    step() {  # step NAME LIMIT COMMAND...: at most LIMIT seconds, and never past the budget
        local name=$1 limit=$2 left=$((end - SECONDS)) opt=${optional:-0}
        shift 2
        ((left < limit)) && limit=$left
        if ((limit < 20)); then
            if ((opt)); then
                echo "== $name: not run (optional; the budget is spent)" | tee -a "$out/summary.txt"
            else
                echo "== $name: skipped (budget spent)" | tee -a "$out/summary.txt"
                rc=1
            fi
            return
        fi
        echo "== $name (limit ${limit}s): $*"
        local t0=$SECONDS note=""
        timeout -k 10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
        local code=${PIPESTATUS[0]}
        if ((opt && (code == 124 || code == 137))); then
            note=" (optional: cut at its limit, what it printed is kept; no failure)"
        elif ((code != 0)); then
            rc=1
        fi
        echo "== $name: exit $code after $((SECONDS - t0))s$note" | tee -a "$out/summary.txt"
    }
    optional() {  # optional NAME LIMIT COMMAND...: a step in what the budget has left; not running it, or its
        local optional=1  # being cut at its limit, is no failure (an error is)
        step "$@"
    }
    step stylegan2 310 "$py" bench/stylegan2_speed.py --cuda-only --profile --rounds 2 --json "$out/stylegan2.json"
    step train_step 45 "$py" bench/train_step.py --device cuda --channels 64 --batch 64 --rounds 5 --steps 20
    # log_level: a failure's report without torch's DEBUG trace records (they filled the whole reply's tail)
    step test_cuda 130 "$py" -m pytest -q -p no:cacheprovider -o log_level=WARNING tests/test_cuda.py
    step dcgan 85 "$py" bench/gpu.py --amp off bf16 --modes off reduce-overhead graph graph+default --rounds 3 \
        --profile --json "$out/dcgan.json"
    optional penalty 90 "$py" bench/penalty_speed.py --device cuda --rounds 5 --steps 16
    return $rc
}

case "${1:-}" in
wheels) wheels ;;
run) run ;;
*)
    echo "usage: bash bench/gpu_session.sh wheels|run" >&2
    exit 2
    ;;
esac
