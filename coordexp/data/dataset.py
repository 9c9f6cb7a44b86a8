"""One entry point for a run's data: ``custom.train_jsonl`` / ``custom.val_jsonl`` -> validated samples.

An address is either a JSONL path (the data contract, ``coordexp.data.jsonl``) or a generator URI
``synthetic://<generator>?n=N&seed=S[&param=value...]`` whose samples are made on the fly. Both give
the same ``Sample`` records, so nothing downstream knows where a sample came from. The generators'
modules are imported only when their URI is used (they pull in numpy and drawing code).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import attrs

from coordexp.data.jsonl import load_jsonl
from coordexp.data.records import Sample
from coordexp.errors import ConfigError

SCHEME = "synthetic"
# generator name -> "module:function" taking (n, seed, **params) and returning list[Sample]
GENERATORS: Mapping[str, str] = {"shapes": "coordexp.data.synthetic:synthetic_samples"}
FORM = f"{SCHEME}://<generator>?n=N&seed=S (generators: {', '.join(GENERATORS)}), e.g. synthetic://shapes?n=64&seed=0"


def load_samples(
    uri_or_path: str | Path,
    *,
    image_root: str | Path | None = None,
    limit: int | None = None,
    key: str = "custom.train_jsonl",
) -> list[Sample]:
    """The samples an address names, validated; ``limit`` keeps the first N (custom.*_sample_limit,
    which config validation keeps positive).

    ``key`` is the config key the address came from, named in every error about the address itself;
    errors inside a JSONL file are DataErrors naming ``file:line``. With a limit, a generator makes
    only the first N samples (sample k does not depend on n).
    """
    address = str(uri_or_path)
    call = parse_generator_uri(address, key=key)
    if call is not None:
        count = call.n if limit is None else min(call.n, limit)
        try:
            return _generator(call.generator)(count, call.seed, **call.params)
        except ConfigError as exc:
            raise ConfigError([f"{key}={address!r}: {m}" for m in exc.messages]) from exc
    path = Path(address)
    if not path.is_file():
        raise ConfigError(
            f"{key}: data file {path} does not exist; give a JSONL file (a relative path is taken from the working "
            f"directory) or a generator address {FORM}"
        )
    return load_jsonl(path, image_root=image_root, limit=limit)


@attrs.frozen
class GeneratorCall:
    """A parsed generator address: which generator, how many samples, which seed, its other parameters."""

    generator: str
    n: int
    seed: int
    params: Mapping[str, str]  # the URI's other parameters as text; the generator checks them


def parse_generator_uri(address: str, *, key: str) -> GeneratorCall | None:
    """The generator address in ``address``, None for a file path; a malformed one is a ConfigError.

    Config validation can call this to refuse a bad address at load time without generating anything.
    """
    parts = urlsplit(address)
    if parts.scheme != SCHEME:
        return None

    def bad(why: str) -> ConfigError:
        return ConfigError(f"{key}={address!r}: {why}; the form is {FORM}")

    if parts.netloc not in GENERATORS:
        raise bad(f"unknown generator {parts.netloc!r}")
    if parts.path or parts.fragment:
        raise bad("a generator address has no path or fragment")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise bad(f"malformed query ({exc})") from exc
    params = dict(pairs)
    if len(params) != len(pairs):
        raise bad("a parameter is given twice")
    counts = {}
    for name in ("n", "seed"):
        text = params.pop(name, None)
        if text is None or not text.isascii() or not text.isdigit():
            raise bad(f"{name} must be a non-negative integer, got {'nothing' if text is None else repr(text)}")
        counts[name] = int(text)
    if counts["n"] < 1:
        raise bad("n must be >= 1")
    return GeneratorCall(parts.netloc, counts["n"], counts["seed"], params)


def _generator(name: str) -> Callable[..., list[Sample]]:
    module, func = GENERATORS[name].split(":")
    return getattr(importlib.import_module(module), func)
