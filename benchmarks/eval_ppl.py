"""Perplexity of float, round-to-nearest and AWQ on the shared SmolLM2-135M (wikitext-2).

    python benchmarks/eval_ppl.py                          # w4 g64, w4 g128, w3 g64
    python benchmarks/eval_ppl.py --settings w4g64 --out results.md

Protocol (the one the reference figures in the README were measured on):
calibrate on 64 samples x 512 tokens of ``data/wikitext-2/valid.txt`` (windows
evenly spaced over the file), evaluate on the first 40 x 512 tokens of
``test.txt`` in non-overlapping chunks, fp32 activations, lm_head kept float.
Prints one table: perplexity, calibration seconds, and calibration's peak
resident memory above the loaded model (sampled every 20 ms).

The shared folder is ``$AWQ_AO_SHARED``, else ``../shared`` beside the repo.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import threading
import time

import torch

import awq_ao
from awq_ao.calibration import samples_from_text, tokenize_text

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def shared_dir() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("AWQ_AO_SHARED", os.path.join(here, "..", "shared"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory above the level at entry, sampled in a thread."""

    def __enter__(self):
        self.base = rss_bytes()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def above_base(self) -> int:
        return self.peak - self.base


def parse_setting(text: str) -> tuple[int, int]:
    if not (text.startswith("w") and "g" in text):
        raise argparse.ArgumentTypeError(f"settings look like w4g64, got {text!r}")
    bits, group = text[1:].split("g")
    return int(bits), int(group)


def load(shared: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = os.path.join(shared, "models")
    tok = AutoTokenizer.from_pretrained(models, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(models, gguf_file=GGUF, dtype=torch.float32).eval()
    return tok, model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="w4g64,w4g128,w3g64")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--eval-chunks", type=int, default=40)
    parser.add_argument("--gqa", default="auto", choices=["auto", "fold", "pre_scale"])
    parser.add_argument("--module-loss-tokens", type=int, default=0,
                        help="tokens scoring gate/up on the MLP output (0: their own output error)")
    parser.add_argument("--per-linear", action="store_true", help="a separate pre-scale per linear of q/k/v, gate/up")
    parser.add_argument("--clip-grid", type=int, default=20)
    parser.add_argument("--symmetric-clip", action="store_true", help="AWQ's one-ratio clip (default: two-sided)")
    parser.add_argument("--quantized-inputs", action="store_true",
                        help="feed each block the quantized previous blocks' outputs")
    parser.add_argument("--no-rtn", action="store_true", help="skip the round-to-nearest rows")
    parser.add_argument("--no-float", action="store_true", help="skip the float row")
    parser.add_argument("--batch-size", type=int, default=4, help="calibration sequences per block forward")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    settings = [parse_setting(s) for s in args.settings.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    shared = shared_dir()
    if not os.path.isfile(os.path.join(shared, "models", GGUF)):
        print(f"error: {GGUF} not found under {shared}/models (set AWQ_AO_SHARED)")
        return 2
    torch.manual_seed(0)
    tok, model = load(shared)
    data = os.path.join(shared, "data", "wikitext-2")
    calib = samples_from_text(os.path.join(data, "valid.txt"), tok, args.calib_samples, args.seq_len)
    test = tokenize_text(os.path.join(data, "test.txt"), tok)[: args.eval_chunks * args.seq_len]
    model_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    rows = ["| model | setting | perplexity | calibration s | calibration peak RSS above model |",
            "|---|---|---|---|---|"]

    def emit(row: str) -> None:
        rows.append(row)
        print(row, flush=True)

    print(f"SmolLM2-135M fp32 ({model_mib:.0f} MiB of parameters), calibration {tuple(calib.shape)}, "
          f"evaluation {args.eval_chunks} x {args.seq_len} tokens, threads {torch.get_num_threads()}")
    if not args.no_float:
        emit(f"| float | fp32 | {awq_ao.perplexity(model, test, args.seq_len, progress=False):.2f} | - | - |")
    for bits, group in settings:
        cfg = awq_ao.awq_config(bits=bits, group_size=group)
        name = f"w{bits} g{group}"
        if not args.no_rtn:
            rtn = copy.deepcopy(model)
            awq_ao.quantize_(rtn, cfg)
            emit(f"| round-to-nearest | {name} | {awq_ao.perplexity(rtn, test, args.seq_len, progress=False):.2f} "
                 "| - | - |")
            del rtn
        awq = copy.deepcopy(model)
        with PeakRSS() as mem:
            start = time.perf_counter()
            awq_ao.calibrate(awq, calib, cfg, gqa=args.gqa, module_loss_tokens=args.module_loss_tokens,
                            per_linear=args.per_linear, quantized_inputs=args.quantized_inputs,
                            clip_grid=args.clip_grid, asymmetric_clip=not args.symmetric_clip,
                            batch_size=args.batch_size)
            seconds = time.perf_counter() - start
        pre = sum(r["mode"] == "pre_scale" for r in awq.awq_calibration_report)
        awq_ao.quantize_(awq, cfg)
        ppl = awq_ao.perplexity(awq, test, args.seq_len, progress=False)
        emit(f"| awq_ao AWQ (gqa={args.gqa}, {pre} v->o pre-scaled) | {name} | {ppl:.2f} | {seconds:.0f} "
             f"| {mem.above_base / 2**20:.0f} MiB ({mem.above_base / 2**20 / model_mib:.2f}x model) |")
        del awq
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
