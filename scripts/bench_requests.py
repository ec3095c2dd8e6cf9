"""
Benchmark the request pipeline of make_requests.py against the local fake server.

    python scripts/bench_requests.py                      # 2,000 requests, 64 in flight, 200 ms answers

The fake server runs in its own process (so its CPU time is not counted as ours) on 127.0.0.1 and
answers every request after --delay seconds. Two runs of generate mode, each writing real output:
  1. no rate limit: the ceiling is concurrency / delay (64 / 0.2 s = 320 req/s); target >= 90% of it.
  2. --rps limit (50 req/s): target within 5% of the limit.
Client overhead = this process's CPU time / requests; target < 2 ms.
"""
import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from regional_tinystories.languages import load_language
from regional_tinystories.llm import Job, OpenAICompatibleBackend, RequestSettings, Shard, run_requests
from regional_tinystories.replies import parse_story_reply
from regional_tinystories.templates import BUILTIN_TEMPLATES, fill_story_template


def start_fake_server(delay):
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "prompting", "fake_llm_server.py"),
                               "--port", "0", "--delay", str(delay)], stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()  # "fake LLM server listening on http://127.0.0.1:PORT/v1"
    if "http://" not in line:
        server.kill()
        sys.exit(f"error: the fake server did not start ({line!r})")
    return server, line.split()[-1]


def bench_jobs(count, out_dir):
    english = load_language("english")
    shard = Shard("bench", None, os.path.join(out_dir, "bench.jsonl"), os.path.join(out_dir, "bench.failed.jsonl"),
                  set())
    for i in range(count):
        prompt = fill_story_template(BUILTIN_TEMPLATES["2+"], english, f"kite{i}", "fly", "windy", "happy")
        record = {"ID": f"bench-{i}", "language": "english", "noun": f"kite{i}", "verb": "fly",
                  "adjective": "windy", "ending": "happy", "template": "2+", "prompt": prompt}
        yield Job(record["ID"], record, shard)


class GenerateStories:
    """generate mode as make_requests.py runs it: the prompt out, the reply parsed and checked as a story."""

    def __init__(self, backend):
        self.backend, self.english = backend, load_language("english")

    def prompt_for(self, record):
        return record["prompt"]

    def result_for(self, record, reply):
        story = parse_story_reply(reply, self.english, min_words=50, min_script_share=0.9)
        return {**record, "model": self.backend.model, "backend": self.backend.name, "story": story}


def run_once(base_url, count, concurrency, rps):
    with tempfile.TemporaryDirectory() as out_dir:
        backend = OpenAICompatibleBackend(base_url, "fake", max_connections=concurrency)
        mode = GenerateStories(backend)
        settings = RequestSettings(max_in_flight=concurrency, rps=rps, retries=2, timeout=30)
        wall, cpu = time.perf_counter(), time.process_time()
        stats = asyncio.run(run_requests(bench_jobs(count, out_dir), backend, mode, settings, total=count))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        with open(os.path.join(out_dir, "bench.jsonl"), "rb") as f:
            written = sum(1 for _ in f)
    if stats["ok"] != count or written != count:
        sys.exit(f"error: expected {count} results, got {stats['ok']} ok / {written} written ({dict(stats)})")
    return count / wall, wall, 1000 * cpu / count


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the fake server takes per answer")
    parser.add_argument("--rps", type=float, default=50.0, help="limit for the second run")
    args = parser.parse_args()

    server, base_url = start_fake_server(args.delay)
    try:
        ceiling = args.concurrency / args.delay
        unlimited = run_once(base_url, args.requests, args.concurrency, None)
        limited = run_once(base_url, args.requests, args.concurrency, args.rps)
    finally:
        server.kill()
        server.wait()

    rows = [
        ("no rate limit", unlimited, f">= {0.9 * ceiling:.0f} req/s (90% of {ceiling:.0f})",
         unlimited[0] >= 0.9 * ceiling),
        (f"--rps {args.rps:g}", limited, f"{0.95 * args.rps:.1f}-{1.05 * args.rps:.1f} req/s",
         abs(limited[0] - args.rps) <= 0.05 * args.rps),
    ]
    print(f"{args.requests} requests, {args.concurrency} in flight, server delay {args.delay * 1000:.0f} ms\n")
    print("| run | wall time | throughput | target | met | client CPU per request (target < 2 ms) |")
    print("|---|---|---|---|---|---|")
    for name, (rate, wall, cpu_ms), target, met in rows:
        print(f"| {name} | {wall:.2f} s | {rate:.1f} req/s | {target} | {'yes' if met else 'NO'} | "
              f"{cpu_ms:.2f} ms ({'yes' if cpu_ms < 2 else 'NO'}) |")


if __name__ == "__main__":
    main()
