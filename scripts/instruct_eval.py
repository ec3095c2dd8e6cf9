"""
Does an instruct model write to its spec? Word coverage of an instruct model against a plain one.

    python scripts/instruct_eval.py --instruct=out/instruct-hindi --plain=out/quickstart-hindi --language=hindi \
        --num_specs=50 --out_dir=out/instruct-eval-hindi

For --num_specs specs — a noun, a verb and an adjective of the language's word lists and an ending, drawn at
random (seeded) as generate_prompts.py draws them — it samples one story each

  instruct, spec         from the instruct model, given the spec as its instruction block (words + ending)
  plain, words opening   from the plain model, given the three words as the opening of the story
  plain, no prompt       from the plain model, given nothing: how often the words turn up by chance

and reports the share of stories that use every required word, the share of the required words used, and the
share per kind, counted on what the model wrote (never on the prompt) with the inflection-aware match of
regional_tinystories/metrics.py (uses_word: बिल्ली matches बिल्लियाँ and बिल्ली को, paddle matches paddled).
Also: the share of stories that ended at <eos>, and their mean length in words. Whether a story ends in the
requested tone needs a judge: rate samples.jsonl with make_requests.py evaluate --rubric=instruct.
Written to --out_dir: instruct_eval.md (also printed), instruct_eval.json and samples.jsonl.
"""
import argparse
import os
import random
import sys

from regional_tinystories import checkpoint, instruct, metrics, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.checkpoint import load_model
from regional_tinystories.errors import InputError
from regional_tinystories.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from regional_tinystories.languages import available_languages, word_list
from regional_tinystories.sampling import SamplingConfig, generate_stories

KINDS = ("noun", "verb", "adjective")


def draw_specs(language, n, seed):
    """n distinct (noun, verb, adjective, ending gloss) combinations of the language's word lists. Multi-word list
    entries are left out: their helper verb may inflect away from the listed form."""
    lists = {kind: [w for w, _ in word_list(language, kind + "s") if " " not in w] for kind in KINDS}
    endings = [gloss for _, gloss in word_list(language, "endings")]
    rng = random.Random(seed)
    specs, seen = [], set()
    while len(specs) < n:
        pick = tuple(rng.choice(lists[kind]) for kind in KINDS) + (rng.choice(endings),)
        if pick not in seen:
            seen.add(pick)
            specs.append(dict(zip((*KINDS, "ending"), pick)))
    return specs


def coverage(stories, specs, language):
    """{all_words, words, noun, verb, adjective}: shares over the stories (each story against its spec)."""
    used = [{kind: metrics.uses_word(story, spec[kind], language) for kind in KINDS} for story, spec in zip(stories, specs)]
    n = max(len(used), 1)
    return {"all_words": sum(all(u.values()) for u in used) / n,
            "words": sum(sum(u.values()) for u in used) / (3 * n),
            **{kind: sum(u[kind] for u in used) / n for kind in KINDS}}


def run_condition(name, model, tokenizer, prompts, instructions, specs, args, device, language):
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              seed=args.seed)
    records = list(generate_stories(model, tokenizer, prompts, sampling, device=device, model_name=name,
                                    progress=True, instructions=instructions))
    # what the model wrote: the story minus the opening it was given
    written = [r["story"][len(r["prompt"]):] if r["story"].startswith(r["prompt"]) else r["story"] for r in records]
    row = {"condition": name, **coverage(written, specs, language),
           "ended_at_eos": sum(r["finish_reason"] == "eos" for r in records) / len(records),
           "mean_words": sum(len(metrics.words(w)) for w in written) / len(written)}
    for record, spec in zip(records, specs):
        record.update(condition=name, language=language, **spec)
    return row, records


def markdown_table(rows, args, cpu):
    lines = [f"Word coverage, {args.language}, {args.num_specs} specs (seed {args.seed}), temperature "
             f"{args.temperature}, top_p {args.top_p}, up to {args.max_new_tokens} new tokens; {cpu}", "",
             "| condition | all 3 words | words used | noun | verb | adjective | ended at eos | words/story |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['condition']} | {r['all_words']:.0%} | {r['words']:.0%} | {r['noun']:.0%} | {r['verb']:.0%} "
                     f"| {r['adjective']:.0%} | {r['ended_at_eos']:.0%} | {r['mean_words']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--instruct", required=True, help="run folder or checkpoint of a model trained with --format=instruct")
    p.add_argument("--plain", default="", help="run folder or checkpoint of a plain model of the same language")
    p.add_argument("--language", required=True, choices=available_languages())
    p.add_argument("--num_specs", type=int, default=50)
    p.add_argument("--max_new_tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out_dir", default="out/instruct-eval")
    args = p.parse_args(argv)
    if args.num_specs < 1:
        p.error(f"--num_specs must be at least 1, got {args.num_specs}")
    try:
        specs = draw_specs(args.language, args.num_specs, args.seed)
        device = runtime.pick_device(args.device)
        model, tokenizer, ckpt = load_model(args.instruct, device)
        fmt, _ = instruct.model_format(ckpt, args.language)
        plain = load_model(args.plain, device) if args.plain else None
        if plain and (plain[2].get("meta") or {}).get("instruct"):
            raise InputError(f"--plain {args.plain}: this model was trained with the instruct format")
    except (InputError, ValueError, checkpoint.CheckpointError, tk.TokenizerError) as e:
        sys.exit(f"error: {e}")

    blocks = [fmt.render(instruct.localized_spec({"words": [s[k] for k in KINDS], "ending": s["ending"]},
                                                 args.language), args.language) for s in specs]
    rows, samples = [], []
    conditions = [("instruct, spec", model, tokenizer, [""] * len(specs), blocks)]
    if plain:
        conditions += [("plain, words opening", plain[0], plain[1], [" ".join(s[k] for k in KINDS) for s in specs], None),
                       ("plain, no prompt", plain[0], plain[1], [""] * len(specs), None)]
    for name, m, tok, prompts, instructions in conditions:
        row, records = run_condition(name, m, tok, prompts, instructions, specs, args, device, args.language)
        rows.append(row)
        samples += records
    table = markdown_table(rows, args, runtime.cpu_name())
    os.makedirs(args.out_dir, exist_ok=True)
    write_text_atomic(os.path.join(args.out_dir, "instruct_eval.md"), table)
    write_json_atomic(os.path.join(args.out_dir, "instruct_eval.json"), {"settings": vars(args), "rows": rows})
    write_jsonl_atomic(os.path.join(args.out_dir, "samples.jsonl"), samples)
    print(table)
    print(f"wrote {args.out_dir}/instruct_eval.md, instruct_eval.json, samples.jsonl")


if __name__ == "__main__":
    main()
