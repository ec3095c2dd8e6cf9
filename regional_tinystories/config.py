"""
Config for train.py, sample.py and serve.py, nanoGPT style: defaults are plain names in the script, a config file is
plain Python that sets some of them, and --key=value on the command line overrides both.

    python training-inference/train.py configs/micro.py --max_iters=500 --learning_rate=1e-3 --out_dir=out/x

Command-line values are parsed with ast.literal_eval (never exec'd); anything that is not a Python literal is
taken as a string, and only the first '=' splits key from value. An unknown key or a value of the wrong type
stops with one line naming the key and what is allowed. A key whose default is None (such as lr_decay_iters)
takes its type from the script's `types`. Secrets (hub tokens, wandb keys) are never config keys: they come from
the environment, so they cannot reach a checkpoint or a log.
"""
import ast
import difflib
import os
import runpy

from regional_tinystories.errors import InputError


class ConfigError(InputError):
    pass


def check_value(key, value, defaults, choices=None, types=None, source="config"):
    """value if it suits key (an int where a float is expected becomes a float), else a ConfigError."""
    choices, types = choices or {}, types or {}
    if key not in defaults:
        close = difflib.get_close_matches(key, defaults, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConfigError(f"{source}: unknown config key '{key}' ({hint}valid keys: {', '.join(sorted(defaults))})")
    if key in choices and value not in choices[key]:
        raise ConfigError(f"{source}: {key}={value!r} is not one of {', '.join(map(repr, choices[key]))}")
    default = defaults[key]
    if default is None and key not in types:
        raise TypeError(f"config key {key!r} defaults to None: give its type in `types`")
    expected = types.get(key, type(default))
    if value is None:
        if default is None:
            return value
        raise ConfigError(f"{source}: {key} expects {expected.__name__}, got None")
    if expected is bool or isinstance(value, bool):  # bool is an int to Python, never to a user
        if type(value) is not expected:
            raise ConfigError(f"{source}: {key} expects {expected.__name__}, got {value!r} ({type(value).__name__})")
        return value
    if expected is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, expected):
        raise ConfigError(f"{source}: {key} expects {expected.__name__}, got {value!r} ({type(value).__name__})")
    return value


def parse_value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text  # a bare word such as --dataset=demo-hindi


def print_help(doc, defaults, choices):
    print(doc.strip() + "\n\nsettings (config file names or --key=value), with their defaults:")
    for key, value in defaults.items():
        allowed = f"  (one of {', '.join(map(str, choices[key]))})" if key in choices else ""
        print(f"  --{key}={value!r}{allowed}")


def parse_settings(defaults, argv, choices=None, doc="", types=None):
    """The settings argv gives (config files and --key=value items, in order; a later one wins), checked against
    defaults, choices and types: {name: value} for the keys set, without the defaults.
    -h / --help prints doc and the defaults, then exits."""
    choices = choices or {}
    if "-h" in argv or "--help" in argv:
        print_help(doc, defaults, choices)
        raise SystemExit(0)
    given = {}
    for arg in argv:
        if arg.startswith("--"):
            key, sep, text = arg[2:].partition("=")
            if not sep:
                raise ConfigError(f"command line: '{arg}' must look like --key=value")
            given[key] = check_value(key, parse_value(text), defaults, choices, types, "command line")
        else:
            if not os.path.isfile(arg):
                raise ConfigError(f"config file {arg}: not found")
            try:
                values = runpy.run_path(arg)
            except Exception as e:
                raise ConfigError(f"config file {arg}: could not be run ({type(e).__name__}: {e})") from None
            for key, value in values.items():
                if key.startswith("_") or callable(value) or type(value).__name__ == "module":
                    continue
                given[key] = check_value(key, value, defaults, choices, types, f"config file {arg}")
    return given


def load_config(defaults, argv, choices=None, doc="", types=None):
    """defaults: {name: value}. argv: config files and --key=value items. Returns the final config dict."""
    return {**defaults, **parse_settings(defaults, argv, choices, doc, types)}
