#!/usr/bin/env bash
# Sample every finished run of a sweep (scripts/automate-training.sh) with one prompt file, for the judge
# (prompting/make_requests.py evaluate) and scripts/story_metrics.py.
#
#   bash scripts/sample_sweep.sh SWEEP_DIR PROMPT_FILE [SAMPLE_CONFIG]
#   bash scripts/sample_sweep.sh out/sweep-hindi training-inference/prompts/hindi.txt configs/sample-stories.py
#
# A run is finished when it has a summary.json; each one's samples go to SWEEP_DIR/samples/<run>.jsonl (sample.py's
# records, keyed by prompt ID and sample_index). Resumable: a run whose samples file exists is skipped (sample.py
# writes it atomically, so it is complete). EXTRA passes more --key=value settings to every sample.py call.
set -euo pipefail
cd "$(dirname "$0")/.."

SWEEP_DIR="${1:?usage: sample_sweep.sh SWEEP_DIR PROMPT_FILE [SAMPLE_CONFIG]}"
PROMPTS="${2:?usage: sample_sweep.sh SWEEP_DIR PROMPT_FILE [SAMPLE_CONFIG]}"
SAMPLE_CONFIG="${3:-configs/sample-stories.py}"
EXTRA="${EXTRA:-}"
PYTHON="${PYTHON:-python}"

fail() { echo "error: $*" >&2; exit 1; }
[ -d "$SWEEP_DIR" ] || fail "$SWEEP_DIR: no such sweep folder"
[ -f "$PROMPTS" ] || fail "$PROMPTS: no such prompt file"
[ -f "$SAMPLE_CONFIG" ] || fail "$SAMPLE_CONFIG: no such config file"
mkdir -p "$SWEEP_DIR/samples"

sampled=0
for summary in "$SWEEP_DIR"/*/summary.json; do
    [ -f "$summary" ] || continue
    run="$(dirname "$summary")"
    out="$SWEEP_DIR/samples/$(basename "$run").jsonl"
    if [ -f "$out" ]; then
        echo "== $run: sampled already ($out), skipped"
        continue
    fi
    echo "== $run -> $out"
    # shellcheck disable=SC2086  # EXTRA is a list of --key=value words
    "$PYTHON" training-inference/sample.py "$SAMPLE_CONFIG" --init_from="$run" --start="FILE:$PROMPTS" \
        --output_format=jsonl --out_file="$out" $EXTRA
    sampled=$((sampled + 1))
done
echo "sampled $sampled runs; samples of every finished run are in $SWEEP_DIR/samples/"
