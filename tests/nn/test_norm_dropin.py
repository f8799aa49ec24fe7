"""Our BatchNorm1d/2d as a drop-in, checked with PyTorch's own module test inputs (the ModuleInfo
entries of torch.testing._internal.common_modules.module_db) and with torch.func, autocast,
torch.compile, empty batches, eps errors and mixed dtypes; every check against torch's layer.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bnexp.nn import norm as bn

common_modules = pytest.importorskip(
    "torch.testing._internal.common_modules", reason="needs expecttest (the dev extra)"
)
# Importing torch's test utilities freezes the global cudnn flags (disable_global_flags), which
# breaks any later run in this process that sets them (train.deterministic): thaw them again.
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True

OURS = {nn.BatchNorm1d: bn.BatchNorm1d, nn.BatchNorm2d: bn.BatchNorm2d}
INFOS = [i for i in common_modules.module_db if i.module_cls in OURS]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def _close(ours, theirs, tol, what):
    assert (ours is None) == (theirs is None), f"{what}: one is None"
    if ours is None:
        return
    torch.testing.assert_close(ours, theirs, rtol=tol, atol=tol, msg=lambda m: f"{what}: {m}")


def _clone_input(t):
    return t.detach().clone().requires_grad_(t.requires_grad) if isinstance(t, torch.Tensor) else t


def _run_module_input(info, mi, dtype, training):
    """One ModuleInfo input through torch's layer and ours: output, grads, buffers, 2 steps."""
    c = mi.constructor_input
    torch.manual_seed(0)
    theirs = info.module_cls(*c.args, **c.kwargs, dtype=dtype)
    ours = OURS[info.module_cls](*c.args, **c.kwargs, dtype=dtype)
    if theirs.affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            if theirs.bias is not None:
                theirs.bias.uniform_(-0.5, 0.5)
    ours.load_state_dict(theirs.state_dict())
    ours.train(training)
    theirs.train(training)
    tol = TOL[dtype]
    for step in range(2):
        args = mi.forward_input.args
        xs = [[_clone_input(a) for a in args] for _ in range(2)]
        yo, yt = ours(*xs[0]), theirs(*xs[1])
        _close(yo, yt, tol, f"step {step} output")
        if yt.requires_grad:
            dy = torch.randn_like(yt)
            yo.backward(dy)
            yt.backward(dy)
            for a, b in zip(xs[0], xs[1], strict=True):
                if isinstance(a, torch.Tensor):
                    _close(a.grad, b.grad, tol, f"step {step} input grad")
            for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
                _close(p.grad, q.grad, tol, f"step {step} {name}.grad")
        for (name, b1), b2 in zip(ours.named_buffers(), theirs.buffers(), strict=True):
            _close(b1, b2, tol, f"step {step} buffer {name}")


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.module_cls.__name__)
def test_module_db_inputs_match_torch(info):
    """Every module input of torch's ModuleInfo, float32 and float64, train and eval."""
    ran, failed = 0, []
    for dtype in (torch.float32, torch.float64):
        for training in (True, False):
            inputs = info.module_inputs_func(
                info, device="cpu", dtype=dtype, requires_grad=True, training=training
            )
            for mi in inputs:
                case = f"{mi.desc or 'default'}, {dtype}, {'train' if training else 'eval'}"
                ran += 1
                try:
                    _run_module_input(info, mi, dtype, training)
                except AssertionError as e:
                    failed.append(f"{case}: {e}")
    print(f"{info.module_cls.__name__}: {ran - len(failed)} of {ran} ModuleInfo cases match")
    assert ran >= 28 and not failed, "\n".join(failed)


@pytest.mark.parametrize("info", INFOS, ids=lambda i: i.module_cls.__name__)
def test_module_db_error_inputs_raise_as_torch(info):
    """torch's error inputs (eps <= 0): the same exception type and message, train and eval."""
    ran = 0
    for dtype in (torch.float32, torch.float64):
        for training in (True, False):
            errs = info.module_error_inputs_func(
                info, device="cpu", dtype=dtype, requires_grad=False, training=training
            )
            for err in errs:
                mi = err.module_error_input
                c, x = mi.constructor_input, mi.forward_input.args[0]
                got = []
                for cls in (info.module_cls, OURS[info.module_cls]):
                    layer = cls(*c.args, **c.kwargs, dtype=dtype).train(training)
                    try:
                        layer(x.clone())
                        got.append(None)
                    except Exception as e:  # noqa: BLE001 - comparing what each raises
                        got.append((type(e), str(e)))
                assert got[0] == got[1], (
                    f"{c.kwargs}, train={training}: torch {got[0]}, ours {got[1]}"
                )
                if training:
                    assert got[1][0] is err.error_type
                ran += 1
    assert ran == 8


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(6, 8), bn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4), bn.BatchNorm1d(4),
        nn.ReLU(), nn.Linear(4, 1),
    )  # fmt: skip


def test_vmap_over_8_stacked_models_is_each_model_alone():
    torch.manual_seed(0)
    models = [_mlp() for _ in range(8)]
    alone = [copy.deepcopy(m) for m in models]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    xs = torch.randn(8, 16, 6)

    def one(p, b, x):
        return functional_call(base, (p, b), (x,))

    for step in range(3):  # training: each model's own batch statistics and running estimates
        out = vmap(one)(params, buffers, xs + step)
        out.pow(2).sum().backward()
        for i, m in enumerate(alone):
            m.zero_grad()
            o = m(xs[i] + step)
            o.pow(2).sum().backward()
            tag = f"step {step}, model {i}"
            _close(out[i], o, 1e-5, f"{tag} output")
            for name, p in m.named_parameters():
                _close(params[name].grad[i], p.grad, 1e-5, f"{tag} {name}.grad")
            for name, b in m.named_buffers():
                _close(buffers[name][i], b, 1e-5, f"{tag} {name}")
        for p in params.values():
            p.grad = None
    evals = vmap(one, in_dims=(0, 0, None))(params, buffers, xs[0])  # eval, shared input
    for i, m in enumerate(alone):
        _close(evals[i], m(xs[0]), 1e-5, f"model {i} output on a shared input")


def test_vmap_needs_batched_buffers_in_training_as_torch():
    x = torch.randn(3, 4, 5)
    for layer in (nn.BatchNorm1d(5), bn.BatchNorm1d(5)):
        with pytest.raises(RuntimeError):
            vmap(layer)(x)


def test_torch_func_grad_and_hessian_match_torch():
    ours, theirs = bn.BatchNorm1d(3, dtype=torch.float64), nn.BatchNorm1d(3, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    got = []
    for layer in (ours, theirs):
        params = {k: v.detach() for k, v in layer.named_parameters()}
        buffers = {k: v.clone() for k, v in layer.named_buffers()}
        g = torch.func.grad(
            lambda p, b, layer=layer: functional_call(layer, (p, b), (x,)).pow(3).sum()
        )(params, buffers)  # fmt: skip
        layer.eval()
        h = torch.func.hessian(lambda x, layer=layer: layer(x).pow(3).sum())(x)
        got.append((g["weight"], g["bias"], h, buffers["running_mean"]))
    for name, a, b in zip(("dweight", "dbias", "hessian", "running_mean"), *got, strict=True):
        _close(a, b, 1e-10, name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_conv_bn_step_matches_torch(dtype):
    torch.manual_seed(0)
    nets = [
        nn.Sequential(nn.Conv2d(3, 4, 3), norm(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
        for norm in (bn.BatchNorm2d, nn.BatchNorm2d)
    ]
    nets[0].load_state_dict(nets[1].state_dict())
    x = torch.randn(8, 3, 6, 6)
    got = []
    for net in nets:
        with torch.autocast("cpu", dtype=dtype):
            h = net[1](net[0](x))
            out = net[2:](h)
        out.float().sum().backward()
        got.append((h, net[0].weight.grad, net[1].weight.grad, net[1].running_var))
    assert got[0][0].dtype == got[1][0].dtype == dtype
    for name, a, b in zip(("bn output", "conv grad", "bn grad", "running_var"), *got, strict=True):
        _close(a.float(), b.float(), 1e-2, name)


def test_mixed_dtypes_raise_as_torch():
    for x, module_dtype in [
        (torch.randn(2, 4, 3, 3, dtype=torch.float64), torch.float32),
        (torch.randn(2, 4, 3, 3), torch.float64),
    ]:
        for training in (False, True):
            for cls in (nn.BatchNorm2d, bn.BatchNorm2d):
                layer = cls(4, dtype=module_dtype).train(training)
                with pytest.raises(RuntimeError, match="mixed dtype"):
                    layer(x)


@pytest.mark.parametrize("cls,shape", [("1d", (0, 5, 9)), ("2d", (0, 5, 2, 2))])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_empty_batch_in_training_as_torch(cls, shape, momentum):
    ours, theirs = (
        (bn.BatchNorm1d(5, momentum=momentum), nn.BatchNorm1d(5, momentum=momentum))
        if cls == "1d"
        else (bn.BatchNorm2d(5, momentum=momentum), nn.BatchNorm2d(5, momentum=momentum))
    )
    got = []
    for layer in (ours, theirs):
        x = torch.randn(shape, requires_grad=True)
        y = layer(x)
        y.sum().backward()
        got.append((y.shape, layer.weight.grad, layer.running_mean, layer.num_batches_tracked))
    assert got[0][0] == got[1][0]
    for name, a, b in zip(("weight.grad", "running_mean", "count"), *[g[1:] for g in got]):
        _close(a, b, 0, name)


@pytest.mark.slow
def test_torch_compile_fullgraph_matches_torch():
    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(5, 6), bn.BatchNorm1d(6), nn.ReLU())
    theirs = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU())
    theirs.load_state_dict(ours.state_dict())
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")  # raises on a break
    for step in range(2):
        x = torch.randn(16, 5)
        y, yt = compiled(x), theirs(x)
        y.sum().backward()
        yt.sum().backward()
        _close(y, yt, 1e-5, f"step {step} output")
        _close(ours[0].weight.grad, theirs[0].weight.grad, 1e-5, f"step {step} grad")
        _close(ours[1].running_var, theirs[1].running_var, 1e-6, f"step {step} running_var")
    explain = torch._dynamo.explain(ours)(torch.randn(16, 5))
    assert explain.graph_break_count == 0, explain.break_reasons
