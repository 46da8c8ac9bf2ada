#!/usr/bin/env bash
# Train the shipped models on one GPU machine, inside a hard time budget, in ONE command:
#
#   OUT=/some/dir LATENT_VS_GPU_BUDGET_S=510 bash scripts/gpu_train.sh
#
# 1. prints nvidia-smi and the Python/torch versions (needs only torch, numpy, opencv,
#    PyYAML, tqdm, matplotlib: no rclpy, no FAISS, no pip install);
# 2. trains the default MLVS model (config/train_gpu_default.yaml) with an internal time
#    budget that always leaves time to export -> $OUT/default/{psi.pt,phi.pt,meta.json};
# 3. measures the paper configuration's training throughput (ResNet-34, 224 px, bf16)
#    -> $OUT/throughput.json;
# 4. time permitting, trains the AEVS and PBVS-CNN baselines -> $OUT/aevs.tar.gz, $OUT/pbvs_cnn.tar.gz;
# 5. packs logs (per-run train/eval CSV, loss curves, configs, this script's log) -> $OUT/logs.tar.gz,
#    and copies the log to $OUT/run.log.  At most 8 files under $OUT, none over 16 MiB.
#
# Without CUDA it runs a SMOKE test of the same code paths (torch renderer, bf16 autocast,
# budgets, export, packing) on the CPU at toy sizes:
#   OUT=/tmp/h2out LATENT_VS_GPU_BUDGET_S=60 bash scripts/gpu_train.sh
# Environment: OUT (required), LATENT_VS_GPU_BUDGET_S (whole script, default 510),
# LATENT_VS_GPU_BASELINES (0 to skip them), PYTHON (default python3), LATENT_VS_PHI_STEPS (stage 1 steps;
# default: the config's), LATENT_VS_GIT_COMMIT (labels meta.json when the tree has no .git).
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${LATENT_VS_GPU_BUDGET_S:-510}
OUT=${OUT:?set OUT to the output directory}
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/latent_vs_gpu.XXXXXX")
mkdir -p "$OUT" "$WORK/runs" "$WORK/models" "$WORK/logs"
exec > >(tee "$WORK/logs/run.log") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
say() { echo "[gpu_train $(( $(date +%s) - START ))s/${BUDGET}s] $*"; }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
minutes() { awk -v s="$1" 'BEGIN { printf "%.3f", s / 60 }'; }

say "start $(date -u +%FT%TZ) in $PWD, budget ${BUDGET}s, out $OUT"
(nvidia-smi || echo "nvidia-smi: not available") | tee "$WORK/logs/nvidia-smi.txt"
# one Python start for every check (importing torch takes seconds): versions, CUDA, modules
CHECK=$($PY - <<'EOF'
import importlib, sys, torch, numpy, cv2, yaml, tqdm, matplotlib
print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "| numpy", numpy.__version__,
      "| opencv", cv2.__version__, file=sys.stderr)
import latent_vs.learning.train, latent_vs.learning.objective_mlvs  # no rclpy, no faiss needed
assert "rclpy" not in sys.modules and "faiss" not in sys.modules
have = []
for kind in ("aevs", "pbvs_cnn"):
    try:
        importlib.import_module("latent_vs.learning." + kind)
        have.append(kind)
    except Exception as e:
        print(f"baseline {kind} not available: {e}", file=sys.stderr)
print("DEV=" + ("cuda" if torch.cuda.is_available() else "cpu"))
print("HAVE='" + " ".join(have) + "'")
EOF
) || { say "python/torch/latent_vs not importable"; exit 1; }
eval "$CHECK"
if [ "$DEV" = cuda ]; then
  SMOKE=0
  T_TP=75; T_BASE=55; T_PACK=15; T_START=12; TP_STEPS=150
  MLVS_SET=(); BASE_SET=(); TP_SET=()
  PHI_STEPS=${LATENT_VS_PHI_STEPS:-}     # empty: the config's train.phi_pretrain_steps
else
  SMOKE=1
  say "no CUDA: SMOKE mode (same code paths, toy sizes, on the CPU)"
  T_TP=$(( BUDGET * 15 / 100 )); T_BASE=$(( BUDGET * 12 / 100 )); T_PACK=4; T_START=3; TP_STEPS=2
  MLVS_SET=(--set data.samples=2000 --set data.heldout=32 --set data.anchors=4 --set data.neighbour_pool=256
            --set image_size=64 --set psi.width=8
            --set train.eval_every_steps=10 --set train.warmup_steps=5 --set renderer=torch --set precision=bf16)
  BASE_SET=(--set data.samples=2000 --set data.heldout=16 --set data.anchors=4 --set renderer=torch
            --set image_size=64 --set psi.width=8
            --set precision=bf16 --set train.eval_every_steps=10)
  TP_SET=(--set data.anchors=1 --set data.neighbour_pool=64 --set renderer=torch --set precision=bf16
          --set image_size=64)
  PHI_STEPS=${LATENT_VS_PHI_STEPS:-100}
fi

BASELINES=()
if [ "${LATENT_VS_GPU_BASELINES:-1}" != 0 ]; then BASELINES=($HAVE); fi
say "device $DEV; baselines to train if time allows: ${BASELINES[*]:-none}"

# ---------------------------------------------------------------- 1. the default MLVS model
train_mlvs() {  # $1 = budget seconds, then extra args
  local b=$1; shift
  [ "$b" -ge 5 ] || b=5
  say "MLVS default: budget ${b}s"
  LATENT_VS_DEADLINE_EPOCH=$(( $(date +%s) + b )) \
  timeout -k 10 $(( b + 90 )) $PY -m latent_vs.cli train config/train_gpu_default.yaml --device $DEV \
    --out "$WORK/models/default" --run-dir "$WORK/runs/default" --time-budget-min "$(minutes "$b")" \
    ${PHI_STEPS:+--phi-pretrain-steps "$PHI_STEPS"} "${MLVS_SET[@]}" "$@"
}
B_MLVS=$(( $(left) - T_START - T_TP - ${#BASELINES[@]} * T_BASE - T_PACK ))
train_mlvs "$B_MLVS"; rc=$?
if [ $rc -ne 0 ] && [ "$(left)" -gt $(( T_TP + T_PACK + 60 )) ]; then
  say "MLVS run failed (rc $rc): retrying once in fp32, without channels-last"
  BASELINES=()
  train_mlvs $(( $(left) - T_START - T_TP - T_PACK )) --set precision=fp32 --set channels_last=false \
    --phi-pretrain-steps $(( ${PHI_STEPS:-5000} / 4 + 1 )); rc=$?
fi
if [ -f "$WORK/models/default/meta.json" ]; then
  mkdir -p "$OUT/default"
  for f in psi.pt phi.pt meta.json; do cp "$WORK/models/default/$f" "$OUT/default/$f"; done
  say "default model exported (rc $rc)"
else
  say "default model NOT exported (rc $rc)"
fi

# ---------------------------------------------------------------- 2. paper-size throughput
b=$(min "$T_TP" $(( $(left) - T_PACK )))
if [ "$b" -gt 20 ] || [ "$SMOKE" = 1 ]; then
  say "throughput of config/train_paper.yaml (ResNet-34, 224 px): $TP_STEPS steps, limit ${b}s"
  timeout -k 5 "$b" $PY -m latent_vs.cli train config/train_paper.yaml --device $DEV --throughput "$TP_STEPS" \
    --throughput-json "$WORK/logs/throughput.json" "${TP_SET[@]}" \
    && cp "$WORK/logs/throughput.json" "$OUT/throughput.json" || say "throughput measurement failed or timed out"
fi

# ---------------------------------------------------------------- 3. baselines, time permitting
for kind in "${BASELINES[@]}"; do
  b=$(min "$T_BASE" $(( $(left) - T_PACK - T_START )))
  if [ "$b" -lt $(( T_BASE * 2 / 3 )) ]; then say "no time left for $kind"; continue; fi
  say "baseline $kind: budget ${b}s"
  if LATENT_VS_DEADLINE_EPOCH=$(( $(date +%s) + b )) \
     timeout -k 10 $(( b + 60 )) $PY -m latent_vs.cli train "config/train_gpu_$kind.yaml" --device $DEV \
       --out "$WORK/models/$kind" --run-dir "$WORK/runs/$kind" --time-budget-min "$(minutes "$b")" "${BASE_SET[@]}" \
     && [ -f "$WORK/models/$kind/meta.json" ]; then
    tar -C "$WORK/models" -czf "$OUT/$kind.tar.gz" "$kind"
    sz=$(stat -c %s "$OUT/$kind.tar.gz")
    if [ "$sz" -gt 16700000 ]; then say "$kind.tar.gz is $sz bytes (> 16 MiB): dropped"; rm -f "$OUT/$kind.tar.gz"; fi
  else
    say "baseline $kind failed"
  fi
done

# ---------------------------------------------------------------- 4. pack logs
say "packing; files under $OUT:"
for r in "$WORK"/runs/*/; do
  [ -d "$r" ] || continue
  n=$(basename "$r"); mkdir -p "$WORK/logs/$n"
  cp "$r"/*.csv "$r"/*.png "$r"/config.yaml "$WORK/logs/$n/" 2>/dev/null
done
[ -f "$OUT/default/meta.json" ] && $PY - "$OUT/default/meta.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
t = m["training"]
print("default model:", json.dumps(m["diagnostics"]))
print(f"  {t['steps']} steps, {t['epochs']} epochs, {t['images_seen']} images in {t['wall_time_s']} s on {t['device']}"
      f" (stopped by {t['stopped_by']}); stage 1: {json.dumps(t.get('pretrain'))}")
EOF
[ -f "$OUT/throughput.json" ] && cat "$OUT/throughput.json"
say "done in $(( $(date +%s) - START ))s"
sleep 0.5
cp "$WORK/logs/run.log" "$OUT/run.log"
tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs
ls -la "$OUT" "$OUT/default" 2>/dev/null
rm -rf "$WORK"
[ -f "$OUT/default/meta.json" ]
