"""What the generated probes (adding, copy, the recall tasks) share: fresh training batches every
step and fixed validation/test sets that do not depend on the run's seed, so that runs with
different seeds are compared on the same held-out sequences.

A generated task can also be tested at lengths longer than it was trained at
(``test_seq_len``, a task's own key where its yaml names it): :meth:`GeneratedTask.length_tests`
gives one copy of the task per length, whose test set is drawn at that length; the run scores the
trained model on each and logs ``test/L<length>/<metric>`` (:func:`rnnlab.run` after testing).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cached_property

from torch import Generator, Tensor

from rnnlab.config import positive_int, require
from rnnlab.tasks.base import Task
from rnnlab.tasks.batching import generated_loader, tensor_loader

VAL_STREAM, TEST_STREAM = 2**40, 2**40 + 1  # generator seeds far from any training batch's


class GeneratedTask(Task):
    def __init__(self, seq_len: int, batch_size: int, seed: int, batches_per_epoch: int = 100,
                 val_size: int = 1000, test_size: int = 1000, test_seq_len: Sequence[int] = ()):
        super().__init__(seq_len, batch_size, seed)
        for key, v in [("task.batches_per_epoch", batches_per_epoch), ("task.val_size", val_size),
                       ("task.test_size", test_size)]:
            require(key, v, positive_int, "must be an integer > 0")
        self.batches_per_epoch, self.val_size, self.test_size = batches_per_epoch, val_size, test_size
        lengths = [test_seq_len] if isinstance(test_seq_len, int) else list(test_seq_len or ())
        self.check("task.test_seq_len", test_seq_len,
                   all(isinstance(n, int) and n > seq_len for n in lengths),
                   f"must be lengths (integers) longer than the training length seq_len={seq_len}, "
                   f"e.g. [{2 * seq_len},{4 * seq_len}]")
        self.test_seq_len = tuple(sorted(set(lengths)))

    # Generated on first use, not in __init__: a subclass sets its own fields after calling
    # super().__init__, and generate reads them. Each set has its own seeded generator, so when
    # it is drawn changes nothing in it.
    @cached_property
    def val(self) -> dict[str, Tensor]:
        return self.generate(self.val_size, Generator().manual_seed(VAL_STREAM))

    @cached_property
    def test(self) -> dict[str, Tensor]:
        return self.generate(self.test_size, Generator().manual_seed(TEST_STREAM))

    def generate(self, n: int, g: Generator) -> dict[str, Tensor]:
        raise NotImplementedError

    def length_tests(self) -> dict[int, Task]:
        """This task at each of ``test_seq_len``: a copy whose ``seq_len`` is that length, so
        its test set, metrics and baselines are drawn and scored there (length extrapolation).
        A subclass whose fields depend on the length beyond ``seq_len`` overrides
        :meth:`at_length`."""
        return {n: self.at_length(n) for n in self.test_seq_len}

    def at_length(self, seq_len: int) -> GeneratedTask:
        other = copy.copy(self)
        other.seq_len, other.test_seq_len = seq_len, ()
        for drawn in ("val", "test"):  # cached at the training length: drawn again at this one
            other.__dict__.pop(drawn, None)
        return other

    def train_dataloader(self):
        return generated_loader(self.generate, self.batches_per_epoch, self.batch_size, self.seed)

    def val_dataloader(self):
        return tensor_loader(self.val, self.batch_size, shuffle=False, evaluation=True)

    def test_dataloader(self):
        return tensor_loader(self.test, self.batch_size, shuffle=False, evaluation=True)

    def describe(self):
        return {"data/val_size": len(self.val["x"]), "data/test_size": len(self.test["x"]),
                "data/batches_per_epoch": self.batches_per_epoch}


