"""
serve.py under load: N concurrent clients each ask for a story of M tokens; latency percentiles with continuous
batching (max_batch=64) against one request per forward pass (max_batch=1, the server before batching), both
servers started by this script on 127.0.0.1 and measured in alternating rounds (A B A B ...).

    python scripts/bench_serve.py                         # 50 clients x 50 tokens, 3 rounds each
    python scripts/bench_serve.py --init_from=out/quickstart-hindi --clients=50 --max_tokens=50

Without --init_from it serves a randomly initialised model the size of configs/quickstart.py with a byte-level
tokenizer trained on a little demo text (speed does not depend on what a model has learned; eos is never
drawn, so every request generates max_tokens tokens; the token counts are the server's own). Prints p50 / p95 / max latency and tokens/s per round,
then medians and ranges.
"""
import argparse
import http.client
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import torch

from regional_tinystories import PROJECT_ROOT, checkpoint, runtime
from regional_tinystories import tokenizer as tk
from regional_tinystories.corpus import read_texts
from regional_tinystories.model import GPT, ModelConfig

SERVE = os.path.join(PROJECT_ROOT, "training-inference", "serve.py")


def build_model(folder):
    cfg = runpy.run_path(os.path.join(PROJECT_ROOT, "configs", "quickstart.py"))
    texts = list(read_texts(os.path.join(PROJECT_ROOT, "data", "demo", "hindi.jsonl.gz")))[:200]
    tok = tk.train_tokenizer(tk.parse_name("sp-bpe:4096"), texts, os.path.join(folder, "tok"))
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=cfg.get("block_size", 256), n_layer=cfg["n_layer"],
                            n_head=cfg["n_head"], n_embd=cfg["n_embd"], recipe=cfg.get("recipe", "modern"),
                            tie_weights=False))
    with torch.no_grad():  # eos scores 0 while the other logits spread around it: it is (almost) never drawn
        model.lm_head.weight[tok.eos_id] = 0.0
        model.lm_head.weight.mul_(50.0)
    path = os.path.join(folder, "run")
    os.makedirs(path)
    checkpoint.save_atomic({"model_args": model.model_args(), "model": model.state_dict(), "tokenizer": tk.export(tok),
                            "config": {"dataset": "demo-hindi"}}, os.path.join(path, "ckpt_best.pt"))
    return path, model.num_params()


def start_server(init_from, max_batch, clients):
    proc = subprocess.Popen([sys.executable, SERVE, f"--init_from={init_from}", "--port=0", "--dtype=float32",
                             f"--max_batch={max_batch}", f"--max_queued={clients * 2}"],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, TQDM_DISABLE="1"))
    line = ""
    while "serving" not in line:
        line = proc.stderr.readline()
        if not line:
            sys.exit("error: serve.py did not start")
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # drain the access log
    return proc, int(line.split(" at ")[1].split()[0].split(":")[2].split("/")[0])


def one_round(port, clients, max_tokens, prompt):
    latencies, tokens = [None] * clients, [0] * clients
    barrier = threading.Barrier(clients)

    def client(i):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.8, "seed": i}).encode()
        barrier.wait()
        start = time.perf_counter()
        connection.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        reply = json.loads(connection.getresponse().read())
        latencies[i] = time.perf_counter() - start
        tokens[i] = reply["usage"]["completion_tokens"]
        connection.close()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    ordered = sorted(latencies)
    return {"p50": statistics.median(ordered), "p95": ordered[max(0, int(0.95 * len(ordered)) - 1)],
            "max": ordered[-1], "tokens_per_s": sum(tokens) / wall}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init_from", default="", help="a run folder or .pt to serve (default: a random model, see above)")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--max_tokens", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--prompt", default="एक दिन छोटी मीरा अपने दादा के साथ बाज़ार गई।")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        init_from, params = (args.init_from, None) if args.init_from else build_model(folder)
        print(f"CPU: {runtime.cpu_name()} ({os.cpu_count()} cores), bf16: {runtime.cpu_bf16_kind()}; "
              f"model {init_from if args.init_from else f'random, {params / 1e6:.2f}M parameters'}; "
              f"{args.clients} concurrent clients x {args.max_tokens} tokens, float32")
        servers = {name: start_server(init_from, batch, args.clients)
                   for name, batch in (("one request per forward (max_batch=1)", 1),
                                       ("continuous batching (max_batch=64)", 64))}
        try:
            results = {name: [] for name in servers}
            for port in (port for _, port in servers.values()):  # warm-up round each, not counted
                one_round(port, min(4, args.clients), 5, args.prompt)
            for r in range(args.rounds):
                for name, (_, port) in servers.items():
                    result = one_round(port, args.clients, args.max_tokens, args.prompt)
                    results[name].append(result)
                    print(f"round {r + 1} {name:<40} p50 {result['p50']:6.2f}s  p95 {result['p95']:6.2f}s  "
                          f"max {result['max']:6.2f}s  {result['tokens_per_s']:8.1f} tokens/s", flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)
    print("\n| server | p50 latency | p95 latency | tokens/s |\n|---|---|---|---|")
    for name, rounds in results.items():
        cells = []
        for key, unit in (("p50", "s"), ("p95", "s"), ("tokens_per_s", "")):
            values = [r[key] for r in rounds]
            cells.append(f"{statistics.median(values):.2f}{unit} ({min(values):.2f}–{max(values):.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    base, batched = results.values()
    ratio = [b["tokens_per_s"] / a["tokens_per_s"] for a, b in zip(base, batched)]
    print(f"\nthroughput, batched / one per forward: median {statistics.median(ratio):.2f}x "
          f"(per-round range {min(ratio):.2f}–{max(ratio):.2f}x)")


if __name__ == "__main__":
    main()
