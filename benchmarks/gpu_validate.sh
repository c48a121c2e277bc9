#!/usr/bin/env bash
# One prepared validation run of the CUDA kernels on one GPU (H100 / H200): under 9 minutes.
#
#   bash benchmarks/gpu_validate.sh OUTDIR        (from anywhere; runs in the repository root)
#
# Steps, each time-boxed, in this order, until the overall budget is spent (the rest is recorded as
# skipped): environment record; NVRTC warm-up of every entry point; pytest tests/gpu file by file
# (per-test limit DIFFCUT_TEST_TIMEOUT, per-file limit); shared-memory band probes; compute-sanitizer
# memcheck, synccheck, racecheck, initcheck on small cases; bench_fiedler, bench_recursive and
# bench_pipeline under DIFFCUT_GPU_BACKEND=cuda and =torch. Every result lands in OUTDIR as JSON (and
# logs); summary.json and summary.md say what passed. docs/kernels.md explains how to read them and
# when KERNELS_VALIDATED may be turned on.
#
# Environment: PYTHON (python3), BUDGET_S (510: seconds for all steps), ONLY (comma-separated subset of
# env,warmup,tests,probe,sanitizer,bench), DIFFCUT_TEST_TIMEOUT (90). bench_pipeline needs diffusers
# (docs/kernels.md: carrying its wheel); without it that step is recorded as skipped.
# Exit status: 0 all steps ran and passed, 1 something failed or was skipped, 2 no CUDA device or no CuPy.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: bash benchmarks/gpu_validate.sh OUTDIR" >&2
    exit 2
fi
mkdir -p "$1" || exit 2
OUT="$(cd "$1" && pwd)"
cd "$(dirname "$0")/.." || exit 2
PY="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-510}"
ONLY="${ONLY:-env,warmup,tests,probe,sanitizer,bench}"
export DIFFCUT_TEST_TIMEOUT="${DIFFCUT_TEST_TIMEOUT:-90}"
mkdir -p "$OUT/pytest" "$OUT/sanitizer" "$OUT/bench" "$OUT/logs"
STEPS="$OUT/steps.jsonl"
: > "$STEPS"
T0=$SECONDS

record() {  # name status seconds detail
    "$PY" -c 'import json, sys; n, s, t, d = sys.argv[1:5]; print(json.dumps({"step": n, "status": s, "seconds": float(t), "detail": d}))' \
        "$1" "$2" "$3" "$4" >> "$STEPS"
    printf 'gpu_validate: %-28s %-8s %6ss  %s\n' "$1" "$2" "$3" "$4"
}

wanted() { [[ ",$ONLY," == *",$1,"* ]]; }

step() {  # name limit_s command...: runs the command time-boxed, logs to logs/name.log, records status
    local name="$1" limit="$2"
    shift 2
    local left=$((BUDGET_S - (SECONDS - T0)))
    if [ "$left" -lt 15 ]; then
        record "$name" skipped 0 "overall budget of ${BUDGET_S}s spent"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit="$left"
    local start=$SECONDS rc
    timeout -k 10 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
    rc=$?
    local took=$((SECONDS - start)) status=ok
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        status=timeout
    elif [ "$rc" -ne 0 ]; then
        status=failed
    fi
    record "$name" "$status" "$took" "exit $rc, limit ${limit}s, log logs/$name.log"
    return "$rc"
}

# --------------------------------------------------------------------------------------- preflight
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' > "$OUT/logs/preflight.log" 2>&1; then
    msg="no CUDA device visible to torch (torch.cuda.is_available() is False, or torch is missing: see logs/preflight.log); nothing was validated"
    echo "gpu_validate: $msg" >&2
    "$PY" -c 'import json, sys; json.dump({"verdict": "not run", "reason": sys.argv[1]}, open(sys.argv[2], "w"), indent=2)' \
        "$msg" "$OUT/summary.json" 2>/dev/null || echo "{\"verdict\": \"not run\"}" > "$OUT/summary.json"
    exit 2
fi

if wanted env; then
    step env 30 "$PY" - "$OUT/environment.json" <<'EOF'
import json, shutil, subprocess, sys
import torch
from diffcut_gpu.kernels import dispatch

def run(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None

props = torch.cuda.get_device_properties(0)
usable, reason = dispatch.cupy_status()
try:
    import cupy
    cupy_version = cupy.__version__
except Exception:
    cupy_version = None
try:
    import diffusers
    diffusers_version = diffusers.__version__
except Exception:
    diffusers_version = None
env = {
    "device": props.name,
    "capability": list(torch.cuda.get_device_capability(0)),
    "sms": props.multi_processor_count,
    "smem_optin": getattr(props, "shared_memory_per_block_optin", None),
    "memory_gib": round(props.total_memory / 2**30, 1),
    "driver": run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
    "torch": torch.__version__,
    "torch_cuda": torch.version.cuda,
    "cupy": cupy_version,
    "cupy_usable": usable,
    "cupy_reason": reason,
    "compute_sanitizer": (run(["compute-sanitizer", "--version"]) or "").splitlines()[-1:] or None,
    "diffusers": diffusers_version,
    "commit": run(["git", "rev-parse", "HEAD"]),
    "kernels_validated": dispatch.KERNELS_VALIDATED,
}
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env, indent=2))
sys.exit(0 if usable else 3)
EOF
    if [ $? -eq 3 ]; then
        echo "gpu_validate: CuPy is not usable (environment.json: cupy_reason); the kernels cannot run" >&2
        exit 2
    fi
fi

# --------------------------------------------------------------------------------------- kernels
if wanted warmup; then  # NVRTC compiles each module once; CuPy caches the binaries on disk for later steps
    step warmup 120 "$PY" -c '
import torch
from diffcut_gpu.kernels import loader
names = {s: d for d, s in loader.DTYPE_SUFFIX.items()}
for kernel, (_, suffixes) in loader.ENTRY_POINTS.items():
    for s in suffixes or (None,):
        if kernel.startswith("attn_") and s in ("f16", "bf16") and torch.cuda.get_device_capability() < (8, 0):
            continue
        loader.get_kernel(kernel, None if s is None else names[s])
        print("compiled", loader.entry_name(kernel, None if s is None else names[s]))
'
fi

if wanted tests; then
    for f in tests/gpu/test_*.py; do
        name="$(basename "$f" .py)"
        step "pytest_${name#test_}" 150 "$PY" -m pytest -q -p no:cacheprovider "$f" --junitxml="$OUT/pytest/$name.xml"
    done
fi

if wanted probe; then
    step probe 120 "$PY" -m benchmarks.gpu_validate_cases probe "$OUT/probe.json"
fi

if wanted sanitizer; then
    if command -v compute-sanitizer > /dev/null 2>&1; then
        for tool in memcheck synccheck racecheck initcheck; do
            step "sanitizer_$tool" 90 compute-sanitizer --tool "$tool" --error-exitcode 99 --print-limit 50 \
                --log-file "$OUT/sanitizer/$tool.log" "$PY" -m benchmarks.gpu_validate_cases sanitize \
                "$OUT/sanitizer/$tool.json"
        done
    else
        record sanitizer skipped 0 "compute-sanitizer not on PATH"
    fi
fi

# --------------------------------------------------------------------------------------- benchmarks
bench() {  # name backend module args...: the module's JSON goes to OUTDIR/bench/backend, not docs/results
    local name="$1" backend="$2"
    shift 2
    mkdir -p "$OUT/bench/$backend"
    DIFFCUT_GPU_BACKEND="$backend" step "${name}_$backend" "$LIMIT" "$PY" -c '
import pathlib, runpy, sys
import benchmarks.common as common
out = pathlib.Path(sys.argv[1])
common.RESULTS = out
common.write_json.__defaults__ = (out,)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__")
' "$OUT/bench/$backend" "$@"
}

if wanted bench; then
    for backend in cuda torch; do
        LIMIT=75 bench bench_fiedler "$backend" benchmarks.bench_fiedler --device cuda
        LIMIT=90 bench bench_recursive "$backend" benchmarks.bench_recursive --device cuda
    done
    if "$PY" -c 'import diffusers' > /dev/null 2>&1; then
        for backend in cuda torch; do
            LIMIT=90 bench bench_pipeline "$backend" benchmarks.bench_pipeline --device cuda \
                --configs unet_sd15:512 --batches 1 8 --repeats 3
        done
    else
        record bench_pipeline skipped 0 "diffusers is not importable (docs/kernels.md: carrying its wheel)"
    fi
fi

# --------------------------------------------------------------------------------------- summary
"$PY" - "$OUT" <<'EOF'
import json, pathlib, re, sys
import xml.etree.ElementTree as ET

out = pathlib.Path(sys.argv[1])
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()]
tests = {}
for xml in sorted((out / "pytest").glob("*.xml")):
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    a = suite.attrib
    failed = [c.get("classname", "") + "::" + c.get("name", "") for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    tests[xml.stem] = {k: int(a.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {"failed": failed}
sanitizer = {}
ours = re.compile(r"\b(lanczos_\w+|sweep_\w+|gather_subgraphs_\w+|renorm_rows_\w+|attn_\w+)")
for log in sorted((out / "sanitizer").glob("*.log")):
    text = log.read_text(errors="replace")
    summary = re.findall(r"(?:ERROR|RACECHECK) SUMMARY: .*", text)
    errors = sum(int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", text))
    hazards = sum(int(n) for n in re.findall(r"(\d+) errors?,", " ".join(s for s in summary if "RACECHECK" in s)))
    sanitizer[log.stem] = {"errors": errors + hazards, "summary": summary[-2:],
                           "our_kernels_named": sorted(set(ours.findall(text)))}
probe = json.loads((out / "probe.json").read_text()) if (out / "probe.json").exists() else None
benches = {str(p.relative_to(out)): json.loads(p.read_text()) for p in sorted((out / "bench").rglob("*.json"))}

green_tests = bool(tests) and all(  # a file whose tests all skipped ran nothing: not green
    t["failures"] == 0 and t["errors"] == 0 and t["tests"] > t["skipped"] for t in tests.values())
green_steps = all(s["status"] == "ok" for s in steps if s["step"].startswith(("pytest_", "warmup", "probe", "sanitizer")))
green_sanitizer = bool(sanitizer) and all(s["errors"] == 0 for s in sanitizer.values())
green_probe = probe is not None and all(c["status"] == "ok" for c in probe["cases"])
verdict = "green" if green_tests and green_steps and green_sanitizer and green_probe else "not green"
summary = {"verdict": verdict, "tests_green": green_tests, "sanitizer_green": green_sanitizer,
           "probe_green": green_probe, "steps": steps, "tests": tests, "sanitizer": sanitizer,
           "probe": probe["cases"] if probe else None, "bench_files": list(benches)}
(out / "summary.json").write_text(json.dumps(summary, indent=2))

lines = [f"# GPU validation: {verdict}", "", "| step | status | seconds | detail |", "|---|---|---|---|"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['detail']} |" for s in steps]
lines += ["", "| test file | tests | failures | errors | skipped |", "|---|---|---|---|---|"]
lines += [f"| {k} | {v['tests']} | {v['failures']} | {v['errors']} | {v['skipped']} |" for k, v in tests.items()]
lines += ["", "| sanitizer | errors | summary |", "|---|---|---|"]
lines += [f"| {k} | {v['errors']} | {' / '.join(v['summary'])} |" for k, v in sanitizer.items()]
if probe:
    lines += ["", "| probe | status | seconds |", "|---|---|---|"]
    lines += [f"| {c['case']} | {c['status']} | {c['seconds']} |" for c in probe["cases"]]
for name, data in benches.items():
    rows = data.get("results") or data.get("rows") or []
    if isinstance(rows, dict):
        rows = rows.get("rows", [])
    if rows:
        cols = list(rows[0])[:8]
        lines += ["", f"**{name}**", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols) + " |"
                  for r in rows]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

if grep -q '"status": "\(failed\|timeout\|skipped\)"' "$STEPS"; then
    exit 1
fi
exit 0
