"""The ``awq-ao`` command line: quantize | eval | generate | export.

    awq-ao quantize --output smollm2-awq                    # the default model, calibrated on wikitext-2
    awq-ao eval smollm2-awq --text ../shared/data/wikitext-2/test.txt --chunks 40
    awq-ao generate smollm2-awq --prompt "What is the capital of France?" --chat --compile
    awq-ao export smollm2-awq --format awq --output smollm2-awq-gemm

MODEL is a transformers directory, a ``.gguf`` file or a hub id; wherever a
quantized directory is accepted, an AWQ GEMM directory (AutoAWQ, vLLM,
transformers) is accepted too. User mistakes print one ``error:`` line and
exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Optional

import torch

from awq_ao.formats.native import _DTYPES

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class UserError(Exception):
    """A mistake in the command's input: printed as one line, exit status 2."""


def _shared_candidates() -> list[str]:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return [os.path.join("..", "shared"), os.path.join(repo, "..", "shared")]


def default_model() -> str:
    """$AWQ_AO_MODEL (a folder holding the GGUF, or a file), else ../shared/models, else the hub id."""
    env = os.environ.get("AWQ_AO_MODEL")
    if env:
        path = env if env.endswith(".gguf") else os.path.join(env, DEFAULT_GGUF)
        if not os.path.isfile(path):
            raise UserError(f"AWQ_AO_MODEL={env} holds no {DEFAULT_GGUF}; point it at the folder or the file")
        return path
    for shared in _shared_candidates():
        path = os.path.join(shared, "models", DEFAULT_GGUF)
        if os.path.isfile(path):
            return path
    return DEFAULT_HUB_ID


def default_calibration_text() -> Optional[str]:
    for shared in _shared_candidates():
        path = os.path.join(shared, "data", "wikitext-2", "valid.txt")
        if os.path.isfile(path):
            return path
    return None


def _calibration_samples(args, tokenizer) -> torch.Tensor:
    import awq_ao
    from awq_ao.calibration import samples_from_dataset

    if args.calibration_text:
        if not os.path.isfile(args.calibration_text):
            raise UserError(f"calibration text {args.calibration_text} not found")
        return awq_ao.samples_from_text(args.calibration_text, tokenizer, args.samples, args.seq_len)
    name = args.calibration_dataset or "wikitext"
    try:
        import datasets
    except ImportError as e:
        raise UserError("no calibration text found; pass --calibration-text FILE (or pip install datasets "
                        "for --calibration-dataset)") from e
    config = {"wikitext": ("wikitext-2-raw-v1", "validation")}.get(name, (None, "train"))
    dataset = datasets.load_dataset(name, config[0], split=config[1])
    return samples_from_dataset(dataset, tokenizer, args.samples, args.seq_len)


def cmd_quantize(args) -> None:
    import awq_ao
    from awq_ao.formats.directory import prepare_output_directory
    from awq_ao.models.loading import load_hf_model

    prepare_output_directory(args.output, args.overwrite)
    model_path = args.model or default_model()
    if args.calibration_text is None and args.calibration_dataset is None and not args.rtn:
        args.calibration_text = default_calibration_text()
    print(f"loading {model_path}", flush=True)
    model, tokenizer = load_hf_model(model_path, torch.float32)
    config = awq_ao.awq_config(bits=args.bits, group_size=args.group_size)
    start = time.perf_counter()
    if not args.rtn:
        data = _calibration_samples(args, tokenizer)
        awq_ao.calibrate(model, data, config, gqa=args.gqa)  # fp32: the searches see unrounded activations
        print(f"calibrated on {data.shape[0]} x {data.shape[1]} tokens in {time.perf_counter() - start:.0f} s")
    model.to(_DTYPES[args.dtype])
    with warnings.catch_warnings():
        if args.rtn:
            warnings.simplefilter("ignore")
        awq_ao.quantize_(model, config)
    awq_ao.save_quantized(model, args.output, tokenizer=tokenizer, overwrite=args.overwrite)
    size = sum(os.path.getsize(os.path.join(args.output, f)) for f in os.listdir(args.output)) / 2**20
    print(f"saved {args.output} ({size:.1f} MiB, {'round-to-nearest' if args.rtn else 'AWQ'} "
          f"w{args.bits} g{args.group_size}, {args.dtype})")


def _load_any(path: str, dtype_name: Optional[str]):
    """(transformers model, tokenizer) from a quantized directory (native or AWQ GEMM) or a float model."""
    from transformers import AutoTokenizer

    import awq_ao
    from awq_ao.formats.directory import is_quantized_checkpoint
    from awq_ao.models.loading import load_hf_model

    if os.path.isdir(path) and is_quantized_checkpoint(path):
        model = awq_ao.load_quantized(path)
        if dtype_name:
            model.to(_DTYPES[dtype_name])
        return model, AutoTokenizer.from_pretrained(path)
    if not (os.path.isdir(path) or os.path.isfile(path)):
        raise UserError(f"{path} is neither a directory nor a file")
    return load_hf_model(path, _DTYPES[dtype_name or "float32"])


def cmd_eval(args) -> None:
    from awq_ao.calibration.data import tokenize_text
    from awq_ao.eval import perplexity

    if not os.path.isfile(args.text):
        raise UserError(f"text file {args.text} not found")
    model, tokenizer = _load_any(args.model, args.dtype)
    ids = tokenize_text(args.text, tokenizer)
    start = time.perf_counter()
    ppl = perplexity(model, ids, seq_len=args.seq_len, max_chunks=args.chunks)
    n = min(ids.numel() // args.seq_len, args.chunks or 10**9)
    print(f"ppl={ppl:.3f} ({n} x {args.seq_len} tokens of {os.path.basename(args.text)}, "
          f"{time.perf_counter() - start:.0f} s)")


def cmd_generate(args) -> int:
    from awq_ao import generate

    argv = ["--checkpoint", args.model, "--prompt", args.prompt, "--max-new-tokens", str(args.max_new_tokens)]
    argv += ["--chat"] * args.chat + ["--compile"] * args.compile
    if args.dtype:
        argv += ["--dtype", args.dtype]
    return generate.main(argv)


def cmd_export(args) -> None:
    import awq_ao

    if args.format != "awq":
        raise UserError(f"unknown export format {args.format!r}; the one supported is 'awq' (AWQ GEMM)")
    model, tokenizer = _load_any(args.model, None)
    awq_ao.export_awq(model, args.output, tokenizer=tokenizer, overwrite=args.overwrite)
    print(f"exported {args.output} (AWQ GEMM, loadable by transformers and vLLM)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="awq-ao", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="calibrate with AWQ and quantize a model into a directory")
    q.add_argument("model", nargs="?", help=f"directory, .gguf file or hub id (default: the shared SmolLM2 "
                                            f"GGUF via $AWQ_AO_MODEL or ../shared/models, else {DEFAULT_HUB_ID})")
    q.add_argument("--output", required=True)
    q.add_argument("--calibration-text", help="text file (default: ../shared/data/wikitext-2/valid.txt when found)")
    q.add_argument("--calibration-dataset", help="a datasets name, e.g. wikitext (needs network)")
    q.add_argument("--samples", type=int, default=64)
    q.add_argument("--seq-len", type=int, default=512)
    q.add_argument("--bits", type=int, default=4)
    q.add_argument("--group-size", type=int, default=128)
    q.add_argument("--gqa", choices=("auto", "fold", "pre_scale"), default="auto",
                   help="v->o scaling; 'fold' keeps the model exportable to the AWQ GEMM format")
    q.add_argument("--dtype", choices=sorted(_DTYPES), default="bfloat16")
    q.add_argument("--rtn", action="store_true", help="round-to-nearest, no calibration")
    q.add_argument("--overwrite", action="store_true")

    e = sub.add_parser("eval", help="perplexity on a text file")
    e.add_argument("model", help="a quantized directory (awq_ao or AWQ GEMM), a transformers directory or .gguf")
    e.add_argument("--text", required=True)
    e.add_argument("--chunks", type=int, default=None)
    e.add_argument("--seq-len", type=int, default=512)
    e.add_argument("--dtype", choices=sorted(_DTYPES), default=None)

    g = sub.add_parser("generate", help="generate text (gpt-fast-style decoding)")
    g.add_argument("model")
    g.add_argument("--prompt", required=True)
    g.add_argument("--chat", action="store_true")
    g.add_argument("--compile", action="store_true")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--dtype", choices=sorted(_DTYPES), default=None)

    x = sub.add_parser("export", help="export a quantized directory to another format")
    x.add_argument("model")
    x.add_argument("--format", default="awq")
    x.add_argument("--output", required=True)
    x.add_argument("--overwrite", action="store_true")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"quantize": cmd_quantize, "eval": cmd_eval, "generate": cmd_generate, "export": cmd_export}
    try:
        status = commands[args.command](args)
    except (UserError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
