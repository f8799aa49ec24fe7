"""Evaluation of convolutional models in chunks, channels_last (bnexp.training.step.evaluate)
against one NCHW batch; MLP inputs left alone."""

from __future__ import annotations

from dataclasses import replace

import torch

from bnexp.config import ModelConfig
from bnexp.nn.models import build_model, init_weights
from bnexp.training.step import (
    EVAL_CHUNK,
    evaluate,
    evaluate_splits,
    image_layout,
    is_convolutional,
)


def test_chunked_channels_last_evaluation_equals_one_nchw_batch(small_digits):
    model = build_model(ModelConfig(arch="cnn", channels=[4, 8], norm="custom"), (1, 8, 8), 10)
    init_weights(model, 0)
    model.eval()
    n = 2 * EVAL_CHUNK + 7  # two full chunks and a partial one
    data = replace(small_digits, x_train=small_digits.x_train[:n], y_train=small_digits.y_train[:n])
    forward = lambda xb: model(xb).unsqueeze(0)  # noqa: E731
    x, y = data.x_train, data.y_train
    ((loss_c, acc_c),) = evaluate(forward, data, x, y, batch_size=n, conv=True)
    ((loss_r, acc_r),) = evaluate(forward, data, x, y, batch_size=n, conv=False)
    with torch.no_grad():  # the reference by hand: one NCHW batch, torch's cross-entropy
        logits = model(data.prepare(x))
        ref_loss = float(torch.nn.functional.cross_entropy(logits, y))
        ref_acc = int((logits.argmax(1) == y).sum()) / n
    assert acc_c == acc_r == ref_acc, (acc_c, acc_r, ref_acc)
    torch.testing.assert_close(loss_c, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss_r, ref_loss, rtol=1e-6, atol=1e-6)
    assert is_convolutional(model)
    (row,) = evaluate_splits(forward, model, data, 50)
    torch.testing.assert_close(row["train_loss"], ref_loss, rtol=1e-6, atol=1e-6)


def test_image_layout_only_for_convolutional_cpu_batches():
    x = torch.randn(5, 3, 4, 4)
    cl = image_layout(x)
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, x)
    assert image_layout(x, conv=False) is x
    v = torch.randn(5, 12)
    assert image_layout(v) is v
    mlp = build_model(ModelConfig(arch="mlp", hidden=[8]), (1, 8, 8), 10)
    assert not is_convolutional(mlp)
