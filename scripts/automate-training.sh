#!/usr/bin/env bash
# The seed's hyper-parameter sweep: layers x hidden size x learning rate x warmup, one train.py run each,
# then one Markdown table of every run's final val loss, bits-per-byte, parameters and time.
#
#   bash scripts/automate-training.sh DATASET [BASE_CONFIG]
#   LAYERS="2 6 12" HIDDEN="64 512 1024" LRS="6e-4 3e-4" WARMUPS="1000" NPROC=4 bash scripts/automate-training.sh demo-hindi configs/gpt-512x6.py
#
# NPROC>1 launches each run with torchrun (DDP). The sweep is resumable: a run with a summary.json is skipped,
# a run with only ckpt_last.pt is resumed. EXTRA passes more --key=value settings to every run.
set -euo pipefail
cd "$(dirname "$0")/.."

DATASET="${1:?usage: automate-training.sh DATASET [BASE_CONFIG]}"
BASE_CONFIG="${2:-configs/gpt-512x6.py}"
LAYERS="${LAYERS:-2 6 12}"
HIDDEN="${HIDDEN:-64 512 1024}"
LRS="${LRS:-6e-4}"
WARMUPS="${WARMUPS:-1000}"
NPROC="${NPROC:-1}"
EXTRA="${EXTRA:-}"
PYTHON="${PYTHON:-python}"
SWEEP_DIR="${SWEEP_DIR:-out/sweep-${DATASET}}"
mkdir -p "$SWEEP_DIR"

if [ "$NPROC" -gt 1 ]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
else
    LAUNCH=("$PYTHON")
fi

for layers in $LAYERS; do for hidden in $HIDDEN; do for lr in $LRS; do for warmup in $WARMUPS; do
    run="${SWEEP_DIR}/L${layers}-H${hidden}-lr${lr}-wu${warmup}"
    if [ -f "$run/summary.json" ]; then
        echo "== $run: done already, skipped"
        continue
    fi
    init="scratch"
    [ -f "$run/ckpt_last.pt" ] && init="resume"
    echo "== $run ($init)"
    # shellcheck disable=SC2086  # EXTRA is a list of --key=value words
    "${LAUNCH[@]}" training-inference/train.py "$BASE_CONFIG" --dataset="$DATASET" --out_dir="$run" \
        --init_from="$init" --n_layer="$layers" --n_embd="$hidden" --learning_rate="$lr" \
        --warmup_iters="$warmup" $EXTRA
done; done; done; done

"$PYTHON" - "$SWEEP_DIR" <<'PY'
import glob, json, os, sys
sweep = sys.argv[1]
rows = []
for path in sorted(glob.glob(os.path.join(sweep, "*", "summary.json"))):
    with open(path) as f:
        s = json.load(f)
    rows.append((s["n_layer"], s["n_embd"], s["learning_rate"], s["warmup_iters"], s["params"] / 1e6,
                 s["params_non_embedding"] / 1e6, s["final_val_loss"], s["final_val_bpb"], s["best_val_bpb"],
                 s["seconds"] / 60, s["stop_reason"], os.path.basename(os.path.dirname(path))))
rows.sort(key=lambda r: (r[8] is None, r[8]))
lines = [f"# Sweep {sweep} ({len(rows)} runs, best bits-per-byte first)", "",
         "| layers | hidden | lr | warmup | params (M) | non-emb (M) | final val loss | final val bpb | best val bpb | minutes | stop | run |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
fmt = lambda v: "n/a" if v is None else f"{v:.4f}"
for r in rows:
    lines.append(f"| {r[0]} | {r[1]} | {r[2]:g} | {r[3]} | {r[4]:.2f} | {r[5]:.2f} | {fmt(r[6])} | {fmt(r[7])} | "
                 f"{fmt(r[8])} | {r[9]:.1f} | {r[10]} | {r[11]} |")
out = os.path.join(sweep, "results.md")
with open(out + ".tmp", "w") as f:
    f.write("\n".join(lines) + "\n")
os.replace(out + ".tmp", out)
print("\n".join(lines))
print(f"\nwrote {out}")
PY
