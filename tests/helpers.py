"""Small builders shared by the tests: a tiny multilingual corpus, a prepared dataset, and ways to run a stage
script (as a subprocess, or its main() in this process)."""
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPARE = os.path.join(ROOT, "training-inference", "data", "prepare.py")
TRAIN = os.path.join(ROOT, "training-inference", "train.py")
SAMPLE = os.path.join(ROOT, "training-inference", "sample.py")

STORIES = [
    "एक दिन छोटी मीरा बाज़ार गई। उसने लाल पतंग खरीदी और खुश हो गई।",
    "राजू का कुत्ता बहुत प्यारा था। वह रोज़ पार्क में दौड़ता था।",
    "একদিন ছোট্ট টুনু নদীর ধারে গেল। সে একটা লাল মাছ দেখল।",
    "আমার দাদু রোজ সকালে বাগানে হাঁটেন। তিনি ফুল ভালোবাসেন।",
    "एकदा एका गावात एक हुशार कावळा राहत होता. त्याला खूप तहान लागली.",
    "Tom had a red ball. He liked to play with it in the park every day.",
    "Lily saw a small cat under the tree. She gave it some milk and smiled.",
    "The sun was hot, so the children sat in the shade and ate cold mangoes.",
]


def write_jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return str(path)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def story_records(n_copies=1, field="story"):
    """Distinct records built from STORIES (a copy index keeps repeated stories distinct)."""
    out = []
    for c in range(n_copies):
        for i, s in enumerate(STORIES):
            out.append({"ID": f"t-{c}-{i}", "language": "mixed", field: s if c == 0 else f"{s} ({c})"})
    return out


def run(script, *args, check=True, env=None, timeout=300):
    """Run a project script as a user would; returns the CompletedProcess."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, cwd=ROOT,
                          env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_script(relative_path):
    """A stage script as a module, loaded from its file (scripts are not a package: each runs on its own), so a
    test can call its main() in-process. Loaded once per test session."""
    name = "script_" + relative_path.replace("/", "_").replace("-", "_").removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_main(main, argv):
    """Call a script's main(argv) in this process, as the command line would: exit code, stdout, stderr.
    Scripts report user errors with sys.exit("error: ..."), which prints the message to stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            if isinstance(e.code, str):
                err.write(e.code + "\n")
                code = 1
            else:
                code = e.code or 0
    return Result(code, out.getvalue(), err.getvalue())


def prepare_dataset(tmp_path, name="tiny", tokenizer="sp-bpe:512", n_copies=12, extra=()):
    """Prepare a small multilingual dataset under tmp_path/data/<name>; returns the data root."""
    corpus = write_jsonl(str(tmp_path / "corpus.jsonl"), story_records(n_copies))
    root = str(tmp_path / "data")
    run(PREPARE, f"--input={corpus}", f"--name={name}", f"--out_dir={root}", f"--tokenizer={tokenizer}",
        "--val_fraction=0.2", "--workers=1", *extra)
    return root


def train_small_model(tmp_path, n_embd=32):
    """(run folder, data root) of a 2-layer modern model trained for 60 steps on prepare_dataset's stories: enough
    for sampling, serving and quantization tests to decode real text. In fp32 on every CPU (dtype=auto trains in
    bf16 on some), so that the tests meet the same model everywhere."""
    root = prepare_dataset(tmp_path)
    out = tmp_path / "run"
    result = run_main(load_script("training-inference/train.py").main, [
        "--n_layer=2", "--n_head=2", f"--n_embd={n_embd}", "--block_size=64", "--batch_size=8", "--max_iters=60",
        "--eval_interval=30", "--eval_iters=2", "--learning_rate=1e-2", "--warmup_iters=5", "--dataset=tiny",
        "--dtype=float32",
        f"--data_root={root}", f"--out_dir={out}"])
    assert result.returncode == 0, result.stderr
    return out, root
