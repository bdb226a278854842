"""What the generated probes (adding, copy) share: fresh training batches every step and
fixed validation/test sets that do not depend on the run's seed, so that runs with different
seeds are compared on the same held-out sequences."""

from __future__ import annotations

from functools import cached_property

from torch import Generator, Tensor

from rnnlab.config import positive_int, require
from rnnlab.tasks.base import Task, generated_loader, tensor_loader

VAL_STREAM, TEST_STREAM = 2**40, 2**40 + 1  # generator seeds far from any training batch's


class GeneratedTask(Task):
    def __init__(self, seq_len: int, batch_size: int, seed: int, batches_per_epoch: int = 100,
                 val_size: int = 1000, test_size: int = 1000):
        super().__init__(seq_len, batch_size, seed)
        for key, v in [("task.batches_per_epoch", batches_per_epoch), ("task.val_size", val_size),
                       ("task.test_size", test_size)]:
            require(key, v, positive_int, "must be an integer > 0")
        self.batches_per_epoch, self.val_size, self.test_size = batches_per_epoch, val_size, test_size

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

    def train_dataloader(self):
        return generated_loader(self.generate, self.batches_per_epoch, self.batch_size, self.seed)

    def val_dataloader(self):
        return tensor_loader(self.val, self.batch_size, shuffle=False)

    def test_dataloader(self):
        return tensor_loader(self.test, self.batch_size, shuffle=False)

    def describe(self):
        return {"data/val_size": len(self.val["x"]), "data/test_size": len(self.test["x"]),
                "data/batches_per_epoch": self.batches_per_epoch}


