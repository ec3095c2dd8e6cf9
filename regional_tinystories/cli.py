"""
Command-line spelling shared by the argparse scripts: option names use underscores (--text_field, as the
--key=value configs of train.py and sample.py do). The old spellings of earlier releases (--text-field) still work
for one release; each one used prints a one-line deprecation note on stderr.

run_stage runs a stage script as a user runs it, for the benchmark scripts that drive the others.
"""
import argparse
import os
import subprocess
import sys

from regional_tinystories import PROJECT_ROOT


def underscored(*old_names):
    """{old: new} for hyphenated option names: {"--base-url": "--base_url", ...}."""
    return {old: "--" + old[2:].replace("-", "_") for old in old_names}


def rename_deprecated_options(argv, renamed_options):
    """argv with every old option name in renamed_options ({old: new}; `--old value` or `--old=value`) replaced by
    its new name, and a note on stderr for each one used. Arguments after a bare `--` are positional: left alone."""
    renamed, noted = [], set()
    for position, arg in enumerate(argv):
        if arg == "--":
            return renamed + argv[position:]
        name, equals, value = arg.partition("=")
        if name in renamed_options:
            new_name = renamed_options[name]
            if name not in noted:
                print(f"note: {name} is deprecated, use {new_name} (the old spelling will be removed in a later "
                      "release)", file=sys.stderr)
                noted.add(name)
            arg = new_name + equals + value
        renamed.append(arg)
    return renamed


def add_translation_source_options(parser):
    """The options of a translation run that say what is translated, shared by make_requests.py translate and
    translate_local.py: --source_language, and the split and field of the input records."""
    parser.add_argument("--source_language", default="english")
    parser.add_argument("--hf_split", default="train", help="split of the Hugging Face dataset")
    parser.add_argument("--text_field", help="field holding the text (default: 'story', else 'text')")


def add_init_from(parser, help_text, required=True):
    """--init_from for one or more checkpoints (run folders, .pt files, hf:OWNER/REPO/FILE.pt), the name train.py,
    sample.py and serve.py use; checkpoints given as positional arguments, the older spelling, still work."""
    parser.add_argument("--init_from", nargs="+", default=[], help=help_text)
    parser.add_argument("old_positional_checkpoints", nargs="*", help=argparse.SUPPRESS)
    parser.set_defaults(_init_from_required=required)


def resolve_init_from(parser, args):
    """args.init_from after parsing, with positional checkpoints moved into it (and a deprecation note)."""
    if args.old_positional_checkpoints:
        print("note: checkpoints as positional arguments are deprecated, use --init_from (the old spelling will be "
              "removed in a later release)", file=sys.stderr)
        args.init_from = args.init_from + args.old_positional_checkpoints
    if args._init_from_required and not args.init_from:
        parser.error("--init_from is required")
    return args


def run_stage(script, args, env=None):
    """Run the project's script (a path from the project root, e.g. "training-inference/train.py") with args, in the
    project root, as a user runs it; its CompletedProcess. A failure exits with one line: the script and its last
    line of output."""
    proc = subprocess.run([sys.executable, os.path.join(PROJECT_ROOT, script), *args], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, env=env)
    if proc.returncode:
        lines = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()
        sys.exit(f"error: {script} failed: {lines[-1]}")
    return proc
