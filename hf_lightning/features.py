"""Training features `TrainingArguments` switches on around the loop, done the way `transformers.Trainer` does.

* activation (gradient) checkpointing: `model.activation_checkpointing_enable(...)` before training;
* `torch_compile`: the model the steps run is `torch.compile`d with the backend/mode accelerate would pass;
* NEFTune: transformers' own forward hook on the input embeddings, active for the training run only;
* `torch_empty_cache_steps`: the device cache is emptied every N steps (accelerate's `clear_device_cache`);
* HF's subclass contract that user code calls: `self.accelerator.backward(loss)` (v4-style hook signatures are
  `hf_lightning.legacy_signatures`' business).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from hf_lightning.compat import (
    activate_neftune,
    activation_checkpointing,
    deactivate_neftune,
    enable_model_activation_checkpointing,
)

__all__ = [
    "LightningAccelerator",
    "activate_neftune",
    "compile_model",
    "deactivate_neftune",
    "enable_activation_checkpointing",
    "maybe_empty_device_cache",
]


def enable_activation_checkpointing(model: nn.Module, args: Any) -> None:
    """HF's `train()` preamble: `activation_checkpointing` (v4/v5 alias `gradient_checkpointing`) with its kwargs."""
    enabled, kwargs = activation_checkpointing(args)
    if not enabled:
        return
    if not (hasattr(model, "activation_checkpointing_enable") or hasattr(model, "gradient_checkpointing_enable")):
        raise ValueError(
            f"`activation_checkpointing` (`gradient_checkpointing`) is set but `{type(model).__name__}` has no "
            "`activation_checkpointing_enable` method: use a transformers `PreTrainedModel` or unset the argument."
        )
    enable_model_activation_checkpointing(model, kwargs)


def compile_model(model: nn.Module, args: Any) -> nn.Module:
    """`torch.compile(model)` with the backend/mode accelerate would use; the model itself when not asked."""
    if not args.torch_compile or isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
        return model
    kwargs: dict[str, Any] = {"backend": args.torch_compile_backend or "inductor"}
    if args.torch_compile_mode not in (None, "default"):
        kwargs["mode"] = args.torch_compile_mode
    return torch.compile(model, **kwargs)


def clear_device_cache() -> None:
    """Return the accelerator's cached free memory to the device (accelerate's `clear_device_cache`)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif hasattr(torch, "xpu") and torch.xpu.is_available():
        torch.xpu.empty_cache()
    elif torch.backends.mps.is_available():
        torch.mps.empty_cache()


def maybe_empty_device_cache(args: Any, global_step: int) -> None:
    """`torch_empty_cache_steps`: empty the accelerator's cache when the step count is a multiple of it."""
    steps = args.torch_empty_cache_steps
    if steps is not None and global_step % steps == 0:
        clear_device_cache()
        if torch.backends.mps.is_available() and hasattr(torch.mps, "clear_graph_cache"):
            torch.mps.clear_graph_cache()


class LightningAccelerator:
    """The part of HF's `trainer.accelerator` that training code calls, served by the Lightning run.

    `backward` goes through Lightning's `manual_backward` (precision plugin loss scaling, strategy hooks), which
    is what `accelerate.Accelerator.backward` does for HF.
    """

    def __init__(self, trainer: Any) -> None:
        self._trainer = trainer

    @property
    def _lightning(self) -> Any:
        return self._trainer.lightning_trainer

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        module = self._trainer.lightning_module
        if module is None or module._trainer is None:
            loss.backward(**kwargs)
        else:
            module.manual_backward(loss, **kwargs)

    def unwrap_model(self, model: nn.Module, keep_fp32_wrapper: bool = True, keep_torch_compile: bool = True) -> Any:
        """Strip DDP/compile wrappers, like `Accelerator.unwrap_model`."""
        while True:
            if not keep_torch_compile and isinstance(model, torch._dynamo.eval_frame.OptimizedModule):
                model = model._orig_mod
            elif hasattr(model, "module") and isinstance(model.module, nn.Module):
                model = model.module
            else:
                return model

    @property
    def num_processes(self) -> int:
        return self._lightning.world_size if self._lightning is not None else self._trainer.args.world_size

    @property
    def process_index(self) -> int:
        return self._lightning.global_rank if self._lightning is not None else self._trainer.args.process_index

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    @property
    def device(self) -> torch.device:
        module = self._trainer.lightning_module
        return module.device if module is not None else self._trainer.args.device

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Lightning's precision plugin already autocasts the training step; nothing more to enter."""
        yield
