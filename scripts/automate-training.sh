#!/usr/bin/env bash
# A hyper-parameter sweep: one train.py run per row of a sweep file, then one Markdown table of every run's final
# val loss, bits-per-byte, parameters and time.
#
#   bash scripts/automate-training.sh DATASET [BASE_CONFIG] [SWEEP_FILE]
#   NPROC=8 bash scripts/automate-training.sh hindi configs/gpt-512x6.py configs/sweep-seed.txt
#
# A sweep file is a table: a header line of train.py settings (and optionally `name`, the run folder's name), then
# one row of values per run; `#` starts a comment. The default, configs/sweep-seed.txt, is the original
# Regional-TinyStories' grid: 8 paired rows, each model size with its own batch size, learning rate and warmup.
# Runs go to SWEEP_DIR/<name> (default out/sweep-DATASET). NPROC>1 launches each run with torchrun (DDP). The sweep
# is resumable: a run with a summary.json is skipped, a run with only ckpt_last.pt is resumed. EXTRA passes more
# --key=value settings to every run. scripts/sample_sweep.sh then samples every finished run with one prompt file.
set -euo pipefail
cd "$(dirname "$0")/.."

DATASET="${1:?usage: automate-training.sh DATASET [BASE_CONFIG] [SWEEP_FILE]}"
BASE_CONFIG="${2:-configs/gpt-512x6.py}"
SWEEP_FILE="${3:-configs/sweep-seed.txt}"
NPROC="${NPROC:-1}"
EXTRA="${EXTRA:-}"
PYTHON="${PYTHON:-python}"
SWEEP_DIR="${SWEEP_DIR:-out/sweep-${DATASET}}"

fail() { echo "error: $*" >&2; exit 1; }
[ -f "$SWEEP_FILE" ] || fail "$SWEEP_FILE: no such sweep file"
[ -f "$BASE_CONFIG" ] || fail "$BASE_CONFIG: no such config file"

# Read the whole table first, so that a malformed row stops the sweep before any run starts.
header=() runs=() names=()
line_no=0 named=0
while IFS= read -r line || [ -n "$line" ]; do
    line_no=$((line_no + 1))
    line="${line%%#*}"
    read -r -a values <<< "$line"
    [ "${#values[@]}" -eq 0 ] && continue
    if [ "${#header[@]}" -eq 0 ]; then
        header=("${values[@]}")
        for key in "${header[@]}"; do
            [[ "$key" =~ ^[a-z_][a-z0-9_]*$ ]] || fail "$SWEEP_FILE:$line_no: '$key' is not a setting name"
            [ "$key" = name ] && named=1
        done
        continue
    fi
    [ "${#values[@]}" -eq "${#header[@]}" ] ||
        fail "$SWEEP_FILE:$line_no: ${#values[@]} values for the ${#header[@]} columns ${header[*]}"
    name="" settings=""
    for i in "${!header[@]}"; do
        if [ "${header[$i]}" = name ]; then
            name="${values[$i]}"
        else
            settings+=" --${header[$i]}=${values[$i]}"
            [ "$named" = 1 ] || name+="${name:+-}${header[$i]}${values[$i]}"  # no name column: n_layer2-n_embd64
        fi
    done
    [[ "$name" =~ ^[A-Za-z0-9._=+-]+$ ]] || fail "$SWEEP_FILE:$line_no: run name '$name' is not a folder name"
    for seen in "${names[@]+"${names[@]}"}"; do
        [ "$seen" = "$name" ] && fail "$SWEEP_FILE:$line_no: a second run named $name"
    done
    names+=("$name")
    runs+=("$settings")
done < "$SWEEP_FILE"
[ "${#runs[@]}" -gt 0 ] || fail "$SWEEP_FILE: no runs in it (a header line, then one row per run)"
mkdir -p "$SWEEP_DIR"

if [ "$NPROC" -gt 1 ]; then
    LAUNCH=("$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
else
    LAUNCH=("$PYTHON")
fi

for i in "${!runs[@]}"; do
    run="${SWEEP_DIR}/${names[$i]}"
    if [ -f "$run/summary.json" ]; then
        echo "== $run: done already, skipped"
        continue
    fi
    init="scratch"
    [ -f "$run/ckpt_last.pt" ] && init="resume"
    echo "== $run ($init):${runs[$i]}"
    # shellcheck disable=SC2086  # the row's settings and EXTRA are lists of --key=value words
    "${LAUNCH[@]}" training-inference/train.py "$BASE_CONFIG" --dataset="$DATASET" --out_dir="$run" \
        --init_from="$init" ${runs[$i]} $EXTRA
done

"$PYTHON" - "$SWEEP_DIR" <<'PY'
import glob, json, os, sys
from regional_tinystories.files import write_text_atomic
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
write_text_atomic(out, "\n".join(lines) + "\n")
print("\n".join(lines))
print(f"\nwrote {out}")
PY
