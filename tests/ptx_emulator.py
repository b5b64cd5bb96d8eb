"""A small emulator of the unpacking PTX the CUDA kernels inline (no GPU needed): the few instructions those
strings use, lane by lane on int64 tensors holding 32-bit (0 .. 2**32 - 1) or 16-bit (0 .. 65535) registers.
``tests/test_ptx_unpacking.py`` checks each string with it; ``tests/gluon_emulator.py`` runs the Gluon
kernel's inline asm through it."""

import torch

DTYPES = {"bf16x2": torch.bfloat16, "f16x2": torch.float16}


def halves_to_float(bits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """16-bit patterns (int64 tensor, 0 .. 65535) -> fp32 values of ``dtype``."""
    return bits.to(torch.int32).to(torch.int16).view(dtype).float()


def float_to_halves(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 -> 16-bit patterns of x rounded once (to nearest even) to ``dtype``."""
    return x.to(dtype).view(torch.int16).to(torch.int64) & 0xFFFF


def prmt(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """PTX ``prmt.b32`` (default mode): byte k of the result is byte (c >> 4k) & 7 of {b, a}, or that byte's sign
    replicated when bit 3 of the selector nibble is set."""
    source = (b << 32) | a
    out = torch.zeros_like(a)
    for k in range(4):
        select = (c >> (4 * k)) & 0xF
        byte = (source >> (8 * (select & 7))) & 0xFF
        byte = torch.where((select & 8) != 0, torch.where((byte & 0x80) != 0, 0xFF, 0), byte)
        out |= byte << (8 * k)
    return out


def run_ptx(ptx: str, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the unpacking asm on many lanes: ``inputs`` maps ``$2, $3, ...`` to int64 tensors (32-bit registers
    as 0 .. 2**32 - 1, 16-bit ones as 0 .. 65535). Returns the 16-bit outputs ``$0, $1``."""
    regs = dict(inputs)
    outputs = {}
    body = ptx.strip().strip("{}").strip()
    for statement in filter(None, (s.strip() for s in body.split(";"))):
        op, _, rest = statement.partition(" ")
        if op == ".reg":
            continue
        args = [a.strip() for a in rest.replace("{", "").replace("}", "").split(",")]
        if op == "mov.b32" and rest.strip().startswith("{"):  # unpack: {$0, $1}, t
            pair = regs[args[2]]
            outputs[args[0]], outputs[args[1]] = pair & 0xFFFF, pair >> 16
        elif op == "mov.b32" and len(args) == 3:  # pack: d, {lo, hi}
            regs[args[0]] = regs[args[1]] | (regs[args[2]] << 16)
        elif op == "mov.b32":
            regs[args[0]] = torch.full_like(next(iter(inputs.values())), int(args[1]))
        elif op == "prmt.b32":
            regs[args[0]] = prmt(regs[args[1]], regs[args[2]], regs[args[3]])
        elif op == "lop3.b32":
            assert args[4] == "0xEA", "only (a & b) | c is emulated"
            regs[args[0]] = (regs[args[1]] & int(args[2])) | regs[args[3]]
        elif op.startswith("fma.rn."):
            dtype = DTYPES[op.split(".")[2]]
            a, b, c = (regs[x] for x in args[1:4])
            halves = []
            for shift in (0, 16):  # each half: a * b + c, exact in fp32 for these operands, rounded once
                product = halves_to_float((a >> shift) & 0xFFFF, dtype) * halves_to_float((b >> shift) & 0xFFFF,
                                                                                             dtype)
                halves.append(float_to_halves(product + halves_to_float((c >> shift) & 0xFFFF, dtype), dtype))
            regs[args[0]] = halves[0] | (halves[1] << 16)
        else:
            raise AssertionError(f"unexpected PTX: {statement}")
    return outputs["$0"], outputs["$1"]
