"""A prefix shared by many rows runs once; its KV cache is repeated for each row.

GRPO's G completions share their prompt, and SFT's demonstrations share their task instructions.
Running that prefix once and repeating its KV cache (gradients flow back through the repeat to the
single computation) removes most of the work of the forward and backward passes.

Gradient checkpointing recomputes each decoder layer in the backward pass, and transformers turns
the cache off under it, because a cache written on the first run would be written again on the
replay. So in training mode with checkpointing on, the prefix runs with checkpointing paused (its
activations are kept: one row per prefix, not one per continuation), and the continuation pass
reads the prefix's cache without writing to it, so its checkpointed layers can be replayed.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from transformers.cache_utils import DynamicLayer


def common_prefix_length(sequences: list[list[int]], limit: int) -> int:
    """How many leading tokens every sequence has in common, at most `limit`."""
    first = sequences[0]
    length = 0
    while length < limit and all(sequence[length] == first[length] for sequence in sequences):
        length += 1
    return length


def prefill(model, input_ids: torch.Tensor, repeats: int, **model_kwargs):
    """Run `input_ids` once and repeat its cache `repeats` times per row (row-wise, as
    repeat_interleave). Returns (cache, logits at the last position repeated alike [rows, 1, V])."""
    checkpointing = checkpointing_modules(model) if model.training else []
    with _module_attributes(checkpointing, gradient_checkpointing=False):
        output = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **model_kwargs)
    cache = output.past_key_values
    cache.batch_repeat_interleave(repeats)
    return cache, output.logits.repeat_interleave(repeats, dim=0)


def rows_of(cache, rows: torch.Tensor):
    """A cache of `rows` of `cache` (in this order, repeats allowed), such as a prompt's row once for
    each of its completions; `cache` itself is left as it was, and gradients flow back to it."""
    selected = copy.copy(cache)
    selected.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in selected.layers:  # each layer copy gets new tensors; the originals' stay
        if type(layer).batch_select_indices is DynamicLayer.batch_select_indices:
            if layer.get_seq_length() > 0:
                # index_select rather than the library's indexing: its backward adds each row's
                # gradient with index_add, not an accumulating index_put (measured 0.17 against
                # 2.4 ms a layer for 8 rows of a 346-token prompt)
                layer.keys, layer.values = layer.keys.index_select(0, rows), layer.values.index_select(0, rows)
        else:
            layer.batch_select_indices(rows)
    return selected


@contextlib.contextmanager
def continuing(model, cache):
    """The block's forward passes continue from `cache` (a prefill's, or None: no prefix); under
    gradient checkpointing its layers may read the cache, and the cache stops growing."""
    checkpointing = checkpointing_modules(model) if model.training and cache is not None else []
    if checkpointing:
        for layer in cache.layers:
            layer.update = _update_without_storing(layer)
    with _module_attributes(checkpointing, _can_checkpoint_with_cache=True):
        yield cache


def checkpointing_modules(model) -> list[torch.nn.Module]:
    """The modules gradient checkpointing is switched on in: the decoder layers it recomputes, and
    the model around them, which turns caching off (none when checkpointing is off)."""
    return [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]


@contextlib.contextmanager
def _module_attributes(modules: list[torch.nn.Module], **values):
    """Set attributes on each module for the duration of the block, then restore what was there."""
    missing = object()
    saved = [{name: vars(module).get(name, missing) for name in values} for module in modules]
    for module in modules:
        for name, value in values.items():
            setattr(module, name, value)
    try:
        yield
    finally:
        for module, previous in zip(modules, saved):
            for name, value in previous.items():
                if value is missing:
                    delattr(module, name)
                else:
                    setattr(module, name, value)


def _update_without_storing(layer):
    """The cache layer's `update`, returning past + new states and then putting the layer back as it was."""
    store = layer.update

    def update(*args, **kwargs):
        stored = dict(vars(layer))
        try:
            return store(*args, **kwargs)
        finally:
            vars(layer).clear()
            vars(layer).update(stored)

    return update
