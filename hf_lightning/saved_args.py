"""`training_args.bin`: the arguments pickled as transformers' own class, loadable where hf_lightning is not.

transformers users read a checkpoint's `training_args.bin` with `torch.load(path, weights_only=False)`, often on
another machine with only transformers installed. Pickling hf_lightning's `TrainingArguments` would make that load
import hf_lightning. `hf_args_for_saving` returns a `transformers.TrainingArguments` (or `Seq2SeqTrainingArguments`)
holding the same attribute values, built without running its `__post_init__` again (it would validate and set up
devices a second time), just as unpickling builds it. The Lightning fields and v4 names stay on it as plain
attributes; a value that only hf_lightning or Lightning could unpickle (a `Strategy`, a profiler ...) is stored
as its `repr`.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import transformers

__all__ = ["hf_args_for_saving"]

# Packages a plain transformers environment may lack.
_FOREIGN_PACKAGES = ("hf_lightning", "lightning", "lightning_fabric", "pytorch_lightning")
# Attributes of a run, not of the arguments: dropped.
_RUN_ATTRIBUTES = ("_lightning_processes",)


class _ModuleRecorder(pickle.Pickler):
    """A pickler that notes the module of every object and class it pickles."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO())
        self.modules: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        module = getattr(obj, "__module__", None) if isinstance(obj, type) else type(obj).__module__
        if isinstance(module, str):
            self.modules.add(module)
        return NotImplemented


def _foreign(value: Any) -> bool:
    """Whether unpickling `value` needs a module of `_FOREIGN_PACKAGES` (or `value` cannot be pickled at all)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return False
    recorder = _ModuleRecorder()
    try:
        recorder.dump(value)
    except Exception:
        return True
    return any(module.split(".")[0] in _FOREIGN_PACKAGES for module in recorder.modules)


def _transformers_class(args: Any) -> type:
    if isinstance(args, transformers.Seq2SeqTrainingArguments) or hasattr(args, "predict_with_generate"):
        return transformers.Seq2SeqTrainingArguments
    return transformers.TrainingArguments


def hf_args_for_saving(args: Any) -> Any:
    """`args` as the transformers class it extends, with the same attribute values (see the module docstring)."""
    cls = _transformers_class(args)
    if type(args) is cls:
        return args
    stored = object.__new__(cls)
    for name, value in vars(args).items():
        if name in _RUN_ATTRIBUTES:
            continue
        stored.__dict__[name] = repr(value) if _foreign(value) else value
    return stored
