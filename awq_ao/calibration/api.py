"""``awq_ao.calibrate``: AWQ's activation-aware scale and clip search, block by block.

For each decoder block: one forward over the calibration tokens with hooks that
accumulate, for the input of every scale group, the Gram matrix and mean |x|
per channel (``runner.py``); the scale search per group (``search.py``), folded
into the producing op (``apply.py``) or, for v -> o under grouped-query
attention when that measures better, kept as ``act_pre_scale`` on o_proj; then
the clip search per linear (q and k skipped). Results are left on each linear
as ``module.awq_calibration``, where ``quantize_(model, awq_config())`` finds
them. The block's float outputs feed the next block.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from awq_ao import quant
from awq_ao.calibration import apply, mappings, search
from awq_ao.calibration.data import CalibrationData, as_token_batches
from awq_ao.calibration.runner import capture_block_inputs, run_block
from awq_ao.config import AWQConfig, AWQLinearCalibration, awq_config, quantize_

GQA_CHOICES = ("auto", "fold", "pre_scale")


def calibrate(
    model: nn.Module,
    calibration_data: CalibrationData,
    config: Optional[AWQConfig] = None,
    *,
    n_grid: int = 20,
    clip: bool = True,
    clip_grid: int = 20,
    asymmetric_clip: bool = True,
    gqa: str = "auto",
    per_linear: bool = False,
    quantized_inputs: bool = False,
    batch_size: int = 4,
    device: Optional[torch.types.Device] = None,
    module_loss_tokens: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Calibrate ``model`` in place for ``quantize_(model, config)``; returns it.

    calibration_data: LongTensor [N, L] of token ids, a list of such tensors,
    or an iterable of dicts with ``input_ids`` (see ``samples_from_text``).
    n_grid: points of the scale grid. clip: search clip ratios (q, k excepted);
    clip_grid: ratios 1, 1 - 1/clip_grid, ... down to 0.5. asymmetric_clip: then
    refine the high and the low side of each group separately (default; on
    SmolLM2 w4 g64 it measured 28.43 against 28.63 for AWQ's symmetric clip).
    gqa: v -> o scales under grouped-query attention: "fold" (one scale per
    KV-head channel, folded into v_proj: the float model stays exact and the
    AWQ GEMM export can carry it), "pre_scale" (a free per-channel scale kept as
    o_proj's ``act_pre_scale``), or "auto" (whichever has the lower loss).
    per_linear: give each linear of a multi-linear group (q/k/v, gate/up) its own
    scale, kept as its ``act_pre_scale`` (torchao's prototype does this) instead
    of one scale folded into the norm; costs a multiply per linear at run time.
    quantized_inputs: feed each block the outputs of the previous blocks with
    their quantization applied (GPTQ's sequential order) instead of the float
    model's (AWQ's); one more block forward each.
    device: run each block there (moved in and back out), the model staying
    where it is. module_loss_tokens: tokens (an even subsample of all of them)
    on which a group with a consuming module (gate/up: the MLP) is scored; 0
    scores it on its linears' own output error instead. A per-group summary is
    left in ``model.awq_calibration_report``.
    """
    config = awq_config() if config is None else config
    if not isinstance(config, AWQConfig):
        raise ValueError(f"config must be an AWQConfig (from awq_config()), got {type(config).__name__}")
    if gqa not in GQA_CHOICES:
        raise ValueError(f"gqa must be one of {GQA_CHOICES}, got {gqa!r}")
    if n_grid < 1 or clip_grid < 1:
        raise ValueError(f"n_grid and clip_grid must be >= 1, got {n_grid} and {clip_grid}")
    if module_loss_tokens < 0:
        raise ValueError(f"module_loss_tokens must be >= 0, got {module_loss_tokens}")
    arch = mappings.detect(model)
    heads = mappings.head_layout(model)
    batches = as_token_batches(calibration_data, batch_size)
    total_tokens = sum(b.numel() for b in batches)
    stride = max(1, total_tokens // module_loss_tokens) if module_loss_tokens else 0
    sampled = {g.linears[0]: stride for g in arch.groups if g.module is not None and stride}
    blocks = mappings.blocks_of(model, arch)
    device = None if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    report = []
    try:
        calls = capture_block_inputs(model, blocks[0], batches)
        for index, block in enumerate(tqdm(blocks, desc="AWQ calibration", unit="block", disable=not progress)):
            prefix = f"{arch.blocks}.{index}"
            home = next(block.parameters()).device
            if device is not None:
                block.to(device)
            _check_weights(block, arch, prefix)
            watch = {g.linears[0]: block.get_submodule(g.linears[0]) for g in arch.groups}
            outputs, stats = run_block(block, calls, watch, prefix, device, sampled, in_place=not quantized_inputs)
            report += calibrate_block(block, arch, stats, config, heads, gqa, n_grid,
                                      clip_grid if clip else 0, index, per_linear, asymmetric_clip)
            if quantized_inputs:
                outputs = _quantized_outputs(block, arch, calls, prefix, device)
            if device is not None:
                block.to(home)
            calls = outputs
    finally:
        model.train(was_training)
    model.awq_calibration_report = report
    return model


@torch.no_grad()
def _quantized_outputs(block, arch, calls, prefix, device):
    """The block's outputs with each calibrated linear fake-quantized as ``quantize_`` will quantize it."""
    linears = [block.get_submodule(name) for g in arch.groups for name in g.linears]
    originals = [lin.weight.data for lin in linears]
    try:
        for lin in linears:
            c = lin.awq_calibration
            w = lin.weight.float()
            if c.act_pre_scale is not None:
                w = w / c.act_pre_scale.float()
            wq = quant.fake_quantize(w.to(lin.weight.dtype), c.bits, c.group_size, c.zero_point, c.clip_ratio).float()
            if c.act_pre_scale is not None:
                wq = wq * c.act_pre_scale.float()
            lin.weight.data = wq.to(lin.weight.dtype)
        outputs, _ = run_block(block, calls, {}, prefix, device)
    finally:
        for lin, original in zip(linears, originals):
            lin.weight.data = original
    return outputs


def _check_weights(block: nn.Module, arch: mappings.Architecture, prefix: str) -> None:
    for group in arch.groups:
        for name in group.linears:
            quant.check_weight(block.get_submodule(name).weight, f"{prefix}.{name}.weight")


def _gqa_tie(heads: int, kv: int, head_dim: int):
    """(reduce, expand) between o_proj's input channels [heads * hd] and v_proj's rows [kv * hd]."""
    rep = heads // kv

    def reduce(t: torch.Tensor) -> torch.Tensor:
        return t.view(kv, rep, head_dim).mean(dim=1).reshape(-1)

    def expand(t: torch.Tensor) -> torch.Tensor:
        return t.view(kv, 1, head_dim).expand(kv, rep, head_dim).reshape(-1)

    return reduce, expand


@torch.no_grad()
def module_output_loss(module: nn.Module, linears: list[nn.Linear], x: torch.Tensor):
    """Loss of effective weights [sum N_i, C] for ``linears``: squared error of ``module(x)`` against float.

    The weights are swapped in for the call and restored after; x [T', C].
    """
    x = x.to(linears[0].weight.dtype)
    reference = module(x).float()
    sizes = [lin.weight.shape[0] for lin in linears]

    @torch.no_grad()
    def loss(wq: torch.Tensor) -> float:
        originals = [lin.weight.data for lin in linears]
        try:
            for lin, part in zip(linears, wq.split(sizes)):
                lin.weight.data = part.to(lin.weight.dtype)
            return float(((module(x).float() - reference) ** 2).sum())
        finally:
            for lin, original in zip(linears, originals):
                lin.weight.data = original

    return loss


@torch.no_grad()
def calibrate_block(block, arch, stats, config, head_layout, gqa, n_grid, clip_grid, index,
                    separate=False, asymmetric_clip=False) -> list[dict]:
    """Scale search + folding for each group of one block, then clip search; returns report rows."""
    bits, group_size, zp = config.bits, config.group_size, config.zero_point
    heads, kv, head_dim = head_layout
    rows, per_linear = [], {}
    for group in arch.groups:
        st = stats[group.linears[0]]
        gram, x_mean = st.gram_f32, st.mean_abs
        linears = [block.get_submodule(name) for name in group.linears]
        w = torch.cat([lin.weight.float() for lin in linears])
        dtype = linears[0].weight.dtype
        kwargs = dict(bits=bits, group_size=group_size, zero_point=zp, n_grid=n_grid, scale_dtype=dtype)
        if group.module is not None and st.samples:
            loss_fn = module_output_loss(block.get_submodule(group.module), linears, st.sample)
        else:
            loss_fn = search.gram_loss(w, gram)
        mode, prev_s = "fold", None
        if separate and len(linears) > 1:  # each linear its own scale, kept as its act_pre_scale
            for name, lin in zip(group.linears, linears):
                s_i, loss, rtn = search.search_scale(lin.weight.float(), x_mean, search.gram_loss(lin.weight, gram),
                                                     **kwargs)
                per_linear[name] = (s_i, gram / (s_i[:, None] * s_i[None, :]))
                rows.append({"block": index, "group": f"{group.name}:{name}", "mode": "pre_scale",
                             "loss": loss, "rtn_loss": rtn})
            continue
        if group.heads and kv < heads and w.shape[1] == heads * head_dim:
            tie = _gqa_tie(heads, kv, head_dim)
            s, loss, rtn = search.search_scale(w, x_mean, loss_fn, tie=tie, **kwargs)
            prev_s = tie[0](s)  # one scale per v_proj row (s is constant over each KV group's heads)
            if gqa != "fold":
                s_free, loss_free, _ = search.search_scale(w, x_mean, loss_fn, **kwargs)
                if gqa == "pre_scale" or loss_free < loss:
                    s, loss, mode = s_free, loss_free, "pre_scale"
        else:
            s, loss, rtn = search.search_scale(w, x_mean, loss_fn, **kwargs)
        if mode == "fold":
            apply.divide_output(block.get_submodule(group.prev), s if prev_s is None else prev_s, group.prev)
            for lin in linears:
                apply.multiply_columns(lin, s)
        gram_scaled = gram / (s[:, None] * s[None, :])
        for name in group.linears:
            per_linear[name] = (s if mode == "pre_scale" else None, gram_scaled)
        rows.append({"block": index, "group": group.name, "mode": mode, "loss": loss, "rtn_loss": rtn})
    for group in arch.groups:
        for name in group.linears:
            lin = block.get_submodule(name)
            s_pre, gram_scaled = per_linear[name]
            w_eff = lin.weight.float() if s_pre is None else lin.weight.float() * s_pre[None, :]
            ratio = None
            if clip_grid and name not in arch.no_clip:
                ratio = search.search_clip(w_eff, gram_scaled, bits, group_size, zp, n_grid=clip_grid,
                                           scale_dtype=lin.weight.dtype, asymmetric=asymmetric_clip)
            pre = None if s_pre is None else (1.0 / s_pre).to(lin.weight.dtype)
            lin.awq_calibration = AWQLinearCalibration(bits, group_size, zp, clip_ratio=ratio, act_pre_scale=pre)
    return rows


def calibrate_and_quantize(model: nn.Module, config: AWQConfig, calibration_data=None,
                           dtype: Optional[torch.dtype] = None, **calibrate_kwargs) -> nn.Module:
    """``calibrate`` (skipped without data), cast to ``dtype`` (if given), then ``quantize_``; in place.

    Calibrate in fp32 and pass ``dtype=torch.bfloat16``: the searches then see
    unrounded activations. Without ``calibration_data`` the model is quantized
    round-to-nearest, as asked, so its warning is not shown.
    """
    import warnings

    if calibration_data is not None:
        calibrate(model, calibration_data, config, **calibrate_kwargs)
    if dtype is not None:
        model.to(dtype)
    with warnings.catch_warnings():
        if calibration_data is None:
            warnings.simplefilter("ignore")
        quantize_(model, config)
    return model
