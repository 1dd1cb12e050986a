#!/usr/bin/env bash
# The one prepared call on a lent GPU machine (this project's `device` tool), within its 10-minute
# command limit: the smoke test (every command, tiny) beside the GPU tier's cell stages, each
# stage's JSON and both logs copied to $OUT as they finish. The machine gets the checkout, not
# ../shared: put cifar10-jpg.tar.xz in .gpu/ and the wheels the image lacks in .whl/ (both ignored
# by .git/info/exclude; README "On a GPU"), and name both in `carry`:
#   run(command="bash bench/gpu_device.sh", carry=[".gpu", ".whl"], timeout_s=600)
# BUDGET (seconds, default 540) bounds the whole script; DEADLINE (default BUDGET-120) is when the
# tier stops starting cells; STAGES (default 1,2) are gpu_tier's stages (3: em as the paper runs
# it, under grayscale: the next measurement, BENCHMARKS.md); SMOKE=0 skips the smoke test. A
# rerun on the same warm machine resumes from runs/ cell by cell.
set -u
BUDGET=${BUDGET:-540}
DEADLINE=${DEADLINE:-$((BUDGET - 120))}
OUTDIR=${OUT:-runs/gpu-device}
mkdir -p "$OUTDIR" runs
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
DATA=${DATA:-.gpu/cifar10-jpg.tar.xz}
nvidia-smi -L 2>&1 | head -2
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
# The smoke test is mostly process starts and imports (CPU); the tier's cells keep the GPU busy.
smoke=
if [ "${SMOKE:-1}" != 0 ]; then
  timeout $((BUDGET - 20)) python3 bench/gpu_smoke.py --data "$DATA" --out runs/gpu-smoke >"$OUTDIR/smoke.txt" 2>&1 &
  smoke=$!
fi
timeout "$BUDGET" python3 bench/gpu_tier.py --data "$DATA" --out runs/gpu-tier --stages "${STAGES:-1,2}" \
  --deadline "$DEADLINE" 2>&1 | tee "$OUTDIR/tier.txt"
if [ -n "$smoke" ]; then wait $smoke; echo "smoke exit $?" | tee -a "$OUTDIR/smoke.txt"; fi
cp runs/gpu-smoke/smoke.log "$OUTDIR/" 2>/dev/null
cp runs/gpu-tier/stage-*.json "$OUTDIR/" 2>/dev/null
# every finished cell's record (JSON only: the protected pixels stay behind)
tar czf "$OUTDIR/cells-json.tar.gz" $(find runs/gpu-tier/cells -name '*.json' 2>/dev/null) 2>/dev/null
ls -la "$OUTDIR"
