#!/usr/bin/env bash
# keyed's default (colour key, luma 0.9, 32/255) at the 10k tier, as a user runs it: `learnlock
# protect` on the fixed owner split, `table1`, `audit` with the attacks that know the scheme, and
# `learnlock report` (issue 23 section 2 as a measured design point; issue 22 section 4's example).
#
#     bash bench/keyed10k.sh                 # resumable: protect resumes, every cell is cached
#     SMOKE=1 bash bench/keyed10k.sh         # the same commands at 10 images per class, 1 epoch
#     RHO=16 OUT=runs/keyed10k-r16 HACKERS=fastnet:1,cnn:1 AUX=1000 QUERIES=10000 \
#       ATTACKS=iss-grayscale,iss-jpeg,key-estimate,key-search,orthogonal-projection,distill-proxy \
#       bash bench/keyed10k.sh                 # another design point: L-inf 16/255 (PSNR about 30 dB)
#     RHO=16 SETS="family=mosaic tile=2" OUT=runs/keyed10k-mosaic ... bash bench/keyed10k.sh   # another key family
#
# Data: CIFAR-10 from ../shared/datasets/cifar10-jpg (the JPEG re-encoded copy), fixed splits of
# learnlock.data.splits: owner items 0-999 per class (protected), aux 1000-1099 per class (the
# attacker's clean images), the full 10,000 test images. Authorized network: fastnet, init seed
# 1234, `fast` recipe; hackers `fast` recipe, training seed 1 (table1) and 0 (audit).
# keyed: its defaults except max_rounds 10 (the tier's 30-minute protection budget); RHO (in
# 1/255 steps) sets its L-inf budget, SETS (space-separated NAME=VALUE) more of keyed's settings,
# HACKERS / ATTACKS / AUX (per class) / QUERIES / AUDIT_SETS (more audit --set values) the columns.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-folder:$(cd .. && pwd)/shared/datasets/cifar10-jpg}
OUT=${OUT:-runs/keyed10k}
LL=${LL:-.venv/bin/learnlock}
if [ -n "${SMOKE:-}" ]; then
  PER=10; AUX=10; TEST=(--test-per-class 10); EPOCHS=(--epochs 1); QUERIES=100; CANDIDATES=4
else
  PER=1000; AUX=${AUX:-100}; TEST=(); EPOCHS=(); QUERIES=${QUERIES:-1000}; CANDIDATES=36
fi
HACKERS=${HACKERS:-fastnet:1,cnn:1,lenet:1}
ATTACKS=${ATTACKS:-retrain,iss-grayscale,iss-jpeg,key-estimate,key-search,orthogonal-projection,leaked-pairs,distill-proxy}
RHO_SET=()
[ -n "${RHO:-}" ] && RHO_SET=(--set "rho=$(python3 -c "print($RHO / 255)")")
for s in ${SETS:-}; do RHO_SET+=(--set "$s"); done
AUDIT_SET=()
for s in ${AUDIT_SETS:-}; do AUDIT_SET+=(--set "$s"); done
has() { [[ ",$ATTACKS," == *",$1,"* ]]; }   # the audit refuses settings of attacks it does not run
has key-estimate && AUDIT_SET+=(--set key-estimate.use_aux=false)
has key-search && AUDIT_SET+=(--set key-search.candidates=$CANDIDATES)
has distill-proxy && AUDIT_SET+=(--set distill-proxy.queries=$QUERIES)
stamp() { echo "== $1 ($(date +%T))"; }
mkdir -p "$OUT"
if [ ! -f "$OUT/published/manifest.json" ]; then
  stamp "protect: keyed, $PER owner images per class"
  $LL protect --method keyed --data "$DATA" --split owner --per-class $PER --authorized fastnet --key-seed 1234 \
    --authorized-recipe fast "${EPOCHS[@]/--epochs/--authorized-epochs}" --set max_rounds=${MAX_ROUNDS:-10} "${RHO_SET[@]}" \
    --key-out "$OUT/key.safetensors" --out "$OUT/published" --no-progress
fi
stamp "table1: the authorized fastnet against hackers $HACKERS, a distilled fastnet and a wrong key"
$LL table1 --published "$OUT/published" --authorized "$OUT/key.safetensors" "${TEST[@]}" \
  --hackers $HACKERS --distill fastnet:1 --wrong-keys 4321 --recipe fast "${EPOCHS[@]}" \
  --out "$OUT/table1" --cache "$OUT/cells" --no-progress
stamp "audit: defences and attacks that know the scheme, fastnet hacker"
$LL audit "$OUT/published" --authorized "$OUT/key.safetensors" "${TEST[@]}" \
  --aux "$DATA" --aux-split aux --aux-per-class $AUX \
  --attacks $ATTACKS \
  "${AUDIT_SET[@]}" \
  --nets fastnet --recipe fast "${EPOCHS[@]}" --out "$OUT/audit" --cache "$OUT/cells" --no-progress
stamp "report"
$LL report "$OUT/published" "$OUT/table1" "$OUT/audit" --out "$OUT/report.html"
stamp "done"
