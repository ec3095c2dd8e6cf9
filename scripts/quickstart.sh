#!/usr/bin/env bash
# Regional TinyStories quickstart, offline and on CPU.
#
#   bash scripts/quickstart.sh [hindi|marathi|bangla|english]          prepare the bundled demo corpus, train,
#                                                                     sample, show stories and where everything is
#   bash scripts/quickstart.sh --full [hindi|marathi|bangla|english]   every stage of the original
#       Regional-TinyStories pipeline as a user with a real LLM runs it, against the bundled fake OpenAI-compatible
#       server: generate_prompts -> make_requests generate -> prepare -> train -> sample -> make_requests evaluate
#       -> aggregate_ratings -> results_table. The fake server answers each prompt with the demo story written for
#       it, and judges with FAKE scores computed from the text (word variety and length, not quality).
#
# Settings can be reduced through the environment (the tests do): MAX_ITERS, MAX_SECONDS, MAX_NEW_TOKENS,
# NUM_PROMPTS (sampling), STORY_PROMPTS (--full: prompts per template), TOKENIZER, DATA_ROOT, OUT_ROOT.
set -euo pipefail
cd "$(dirname "$0")/.."

FULL=0
if [ "${1:-}" = "--full" ]; then FULL=1; shift; fi
LANGUAGE="${1:-hindi}"
DATA_ROOT="${DATA_ROOT:-data}"
OUT_ROOT="${OUT_ROOT:-out}"
TOKENIZER="${TOKENIZER:-sp-bpe:4096}"
MAX_ITERS="${MAX_ITERS:-}"          # empty: the config's own (chosen to fit the time budget on a 2-core CPU)
MAX_SECONDS="${MAX_SECONDS:-300}"   # the time budget: a slower machine stops here, evaluated and saved
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-300}"
NUM_PROMPTS="${NUM_PROMPTS:-20}"
STORY_PROMPTS="${STORY_PROMPTS:-1200}"
PYTHON="${PYTHON:-python}"

CORPUS="data/demo/${LANGUAGE}.jsonl.gz"
PROMPTS="training-inference/prompts/${LANGUAGE}.txt"
if [ ! -f "$CORPUS" ] || [ ! -f "$PROMPTS" ]; then
    echo "error: no demo corpus for '${LANGUAGE}' (choose hindi, marathi, bangla or english)" >&2
    exit 2
fi
DATASET="demo-${LANGUAGE}"
[ "$FULL" = 1 ] && DATASET="full-${LANGUAGE}"
RUN="${OUT_ROOT}/${DATASET}"
mkdir -p "$RUN"
head -n "$NUM_PROMPTS" "$PROMPTS" > "$RUN/prompts.txt"
start=$(date +%s)
STEPS=3
[ "$FULL" = 1 ] && STEPS=8

if [ "$FULL" = 1 ]; then
    echo "== 1/$STEPS prompts: generate_prompts.py, templates 1 and 2 -> ${RUN}/prompts/"
    rm -rf "$RUN/prompts" "$RUN/stories" "$RUN/ratings"
    # the seeds the demo corpus's prompts were made with, so the fake server has a story for each
    "$PYTHON" prompting/generate_prompts.py --language "$LANGUAGE" --template 1 --num_prompts "$STORY_PROMPTS" \
        --seed 11 --out "$RUN/prompts"
    "$PYTHON" prompting/generate_prompts.py --language "$LANGUAGE" --template 2 --num_prompts "$STORY_PROMPTS" \
        --seed 22 --out "$RUN/prompts"

    echo "== 2/$STEPS stories: make_requests.py generate against the fake LLM server -> ${RUN}/stories/"
    "$PYTHON" prompting/fake_llm_server.py --port 0 --language "$LANGUAGE" --stories "$CORPUS" \
        > "$RUN/fake_server.log" 2>&1 &
    SERVER_PID=$!
    trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
    for _ in $(seq 200); do
        grep -q "listening on" "$RUN/fake_server.log" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$RUN/fake_server.log" >&2; exit 1; }
        sleep 0.1
    done
    BASE_URL=$(grep -o "http://[^ ]*" "$RUN/fake_server.log" | head -n 1)
    "$PYTHON" prompting/make_requests.py generate --input "$RUN/prompts" --out "$RUN/stories" \
        --base_url "$BASE_URL" --model fake-llm --api_key_env "" --max_in_flight 32
    CORPUS="$RUN/stories"
fi

step=1
[ "$FULL" = 1 ] && step=3
echo "== $step/$STEPS prepare: ${CORPUS} -> ${DATA_ROOT}/${DATASET}/ (tokenizer ${TOKENIZER})"
"$PYTHON" training-inference/data/prepare.py --input="$CORPUS" --name="$DATASET" --out_dir="$DATA_ROOT" \
    --tokenizer="$TOKENIZER" --val_fraction=0.1
"$PYTHON" training-inference/data/decode_data.py "${DATA_ROOT}/${DATASET}" --n=40 | tail -n 1

step=$((step + 1))
echo "== $step/$STEPS train: configs/quickstart.py on CPU for ${MAX_SECONDS}s at most -> ${RUN}/"
"$PYTHON" training-inference/train.py configs/quickstart.py --dataset="$DATASET" --data_root="$DATA_ROOT" \
    --out_dir="$RUN" ${MAX_ITERS:+--max_iters="$MAX_ITERS"} --max_seconds="$MAX_SECONDS" --device=cpu

step=$((step + 1))
echo "== $step/$STEPS sample: ${NUM_PROMPTS} prompts from ${PROMPTS} -> ${RUN}/samples.jsonl"
"$PYTHON" training-inference/sample.py configs/sample-stories.py --init_from="$RUN" --start="FILE:$RUN/prompts.txt" \
    --num_samples=1 --max_new_tokens="$MAX_NEW_TOKENS" --device=cpu --output_format=jsonl --out_file="$RUN/samples.jsonl"

if [ "$FULL" = 1 ]; then
    echo "== 6/$STEPS judge: make_requests.py evaluate (fake scores) -> ${RUN}/ratings/"
    "$PYTHON" prompting/make_requests.py evaluate --input "$RUN/samples.jsonl" --language "$LANGUAGE" \
        --out "$RUN/ratings" --base_url "$BASE_URL" --model fake-judge --api_key_env ""
    echo "== 7/$STEPS aggregate_ratings.py -> ${RUN}/results/ratings.{md,png}"
    "$PYTHON" scripts/aggregate_ratings.py "$RUN/ratings" --out "$RUN/results/ratings"
    echo "== 8/$STEPS results_table.py -> ${RUN}/results/"
    "$PYTHON" scripts/results_table.py --runs "$RUN" --ratings "$RUN/ratings" --out_dir "$RUN/results"
fi

echo
echo "== a few stories"
"$PYTHON" - "$RUN/samples.jsonl" "$RUN/summary.json" <<'PY'
import json, sys
for line in list(open(sys.argv[1], encoding="utf-8"))[:3]:
    r = json.loads(line)
    print(f"--- {r['ID']} ({r['n_tokens']} new tokens, stopped at {r['finish_reason']})\n{r['story']}\n")
s = json.load(open(sys.argv[2]))
print(f"held-out bits per byte: {s['best_val_bpb']:.3f} (best checkpoint; {s['iters']} iterations, "
      f"{s['tokens']:,} training tokens, {s['params'] / 1e6:.2f}M parameters)")
PY
echo "== done in $(( $(date +%s) - start ))s. Artifacts:"
echo "  dataset      ${DATA_ROOT}/${DATASET}/ (train.bin, val.bin, meta.json, tokenizer)"
echo "  checkpoints  ${RUN}/ckpt_best.pt, ${RUN}/ckpt_last.pt"
echo "  training log ${RUN}/log.jsonl, summary ${RUN}/summary.json, loss curve ${RUN}/loss.png"
echo "  samples      ${RUN}/samples.jsonl"
if [ "$FULL" = 1 ]; then
    echo "  prompts      ${RUN}/prompts/, stories ${RUN}/stories/, ratings ${RUN}/ratings/"
    echo "  tables       ${RUN}/results/ratings.md, ${RUN}/results/ (results_table.py: .md, .csv, .png)"
fi
