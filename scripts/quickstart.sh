#!/usr/bin/env bash
# Regional TinyStories quickstart, offline and on CPU: prepare one language of the bundled demo corpus,
# train a small model on it, sample stories from the bundled prompt file, and show where everything is.
#
#   bash scripts/quickstart.sh [hindi|marathi|bangla|english]
#
# Settings can be reduced through the environment (the tests do): MAX_ITERS, MAX_NEW_TOKENS, NUM_PROMPTS,
# TOKENIZER, DATA_ROOT, OUT_ROOT.
set -euo pipefail
cd "$(dirname "$0")/.."

LANGUAGE="${1:-hindi}"
DATA_ROOT="${DATA_ROOT:-data}"
OUT_ROOT="${OUT_ROOT:-out}"
TOKENIZER="${TOKENIZER:-sp-bpe:2048}"
MAX_ITERS="${MAX_ITERS:-300}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-200}"
NUM_PROMPTS="${NUM_PROMPTS:-20}"
PYTHON="${PYTHON:-python}"

CORPUS="data/demo/${LANGUAGE}.jsonl.gz"
PROMPTS="training-inference/prompts/${LANGUAGE}.txt"
if [ ! -f "$CORPUS" ] || [ ! -f "$PROMPTS" ]; then
    echo "error: no demo corpus for '${LANGUAGE}' (choose hindi, marathi, bangla or english)" >&2
    exit 2
fi
DATASET="demo-${LANGUAGE}"
RUN="${OUT_ROOT}/${DATASET}"
mkdir -p "$RUN"
head -n "$NUM_PROMPTS" "$PROMPTS" > "$RUN/prompts.txt"
start=$(date +%s)

echo "== 1/3 prepare: ${CORPUS} -> ${DATA_ROOT}/${DATASET}/ (tokenizer ${TOKENIZER})"
"$PYTHON" training-inference/data/prepare.py --input="$CORPUS" --name="$DATASET" --out_dir="$DATA_ROOT" \
    --tokenizer="$TOKENIZER" --val_fraction=0.1
"$PYTHON" training-inference/data/decode_data.py "${DATA_ROOT}/${DATASET}" --n=40 | tail -n 1

echo "== 2/3 train: configs/quickstart.py on CPU -> ${RUN}/"
rm -f "$RUN/log.jsonl"
"$PYTHON" training-inference/train.py configs/quickstart.py --dataset="$DATASET" --data_root="$DATA_ROOT" \
    --out_dir="$RUN" --max_iters="$MAX_ITERS" --device=cpu

echo "== 3/3 sample: ${NUM_PROMPTS} prompts from ${PROMPTS} -> ${RUN}/samples.jsonl"
"$PYTHON" training-inference/sample.py configs/sample-stories.py --init_from="$RUN" --start="FILE:$RUN/prompts.txt" \
    --num_samples=1 --max_new_tokens="$MAX_NEW_TOKENS" --device=cpu --output_format=jsonl --out_file="$RUN/samples.jsonl"

echo
echo "== a few stories"
"$PYTHON" - "$RUN/samples.jsonl" <<'PY'
import json, sys
for line in list(open(sys.argv[1], encoding="utf-8"))[:3]:
    r = json.loads(line)
    print(f"--- {r['ID']} ({r['n_tokens']} new tokens, stopped at {r['finish_reason']})\n{r['story']}\n")
PY
echo "== done in $(( $(date +%s) - start ))s. Artifacts:"
echo "  dataset      ${DATA_ROOT}/${DATASET}/ (train.bin, val.bin, meta.json, tokenizer)"
echo "  checkpoints  ${RUN}/ckpt_best.pt, ${RUN}/ckpt_last.pt"
echo "  training log ${RUN}/log.jsonl, summary ${RUN}/summary.json, loss curve ${RUN}/loss.png"
echo "  samples      ${RUN}/samples.jsonl"
