# Copyright (c) mmclim contributors. All rights reserved.
"""What a checkpoint must carry, beyond mmengine's, for ``--resume`` to be exact.

mmengine's checkpoints hold the weights, the optimizer, the schedulers and the iteration; a
resumed run then replays the data loader up to that iteration (``IterBasedTrainLoop`` advances
it) with freshly seeded generators, so every random draw after the resume differs from the
uninterrupted run's. :func:`install_exact_resume` (run on ``import mmclim``) makes
``Runner.save_checkpoint`` gather from every rank, before rank 0 writes:

* its random generators (:func:`~mmclim.engine.random_states.capture_random_states`);
* the per-rank state of its model: every submodule with ``rank_state_dict()`` and
  ``load_rank_state_dict(state)`` (e.g. the per-GPU feature queues of the caption losses, which
  are not in the rank-0 ``state_dict``);
* where its training data stream is (:meth:`ReplayableDataIterator.digest`),

into ``checkpoint['meta']['rank_states']``, one entry per rank. The default hook
``exact_resume`` (:class:`~mmclim.engine.hooks.ExactResumeHook`) puts them back. Every rank must
call ``Runner.save_checkpoint`` (mmengine's ``CheckpointHook`` does; the method is rank-0 only
inside).
"""
import functools
import inspect
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from mmengine.dist import all_gather_object, get_world_size
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from torch import Tensor, nn

from .random_states import RandomStream, capture_random_states

# checkpoint['meta'] entry: a list with one rank state per rank.
RANK_STATES_KEY = 'rank_states'
# Entries of a rank state.
RANDOM, MODULES, DATA = 'random', 'modules', 'data'


class ReplayableDataIterator:
    """A training data iterator whose main-process draws come from a :class:`RandomStream`.

    Wraps ``IterBasedTrainLoop.dataloader_iterator``. Each batch is fetched inside the stream,
    so the data pipeline run in this process (``num_workers=0``, the sampler, a loader restart)
    draws only from it; worker processes have their own generators seeded per worker by
    mmengine. The batches are therefore a function of the seed and of the number fetched, and
    replaying ``k`` of them after a resume rebuilds the same stream (caches included) without
    moving the generators the model draws from.

    Args:
        iterator (Iterator): The loop's iterator of batches.
        stream (RandomStream): The generators the fetches draw from.
    """

    def __init__(self, iterator: Iterator, stream: RandomStream) -> None:
        self.iterator = iterator
        self.stream = stream
        self.fetched = 0
        self._expected: Optional[Tuple[int, str, Callable[[int], None]]] = None
        self._skipping = 0

    def __iter__(self) -> 'ReplayableDataIterator':
        return self

    def __next__(self) -> Any:
        if self._skipping:
            self._skipping -= 1
            self.fetched += 1
            return None
        if self._expected is not None and self.fetched == self._expected[0]:
            position, digest, on_mismatch = self._expected
            self._expected = None
            if digest != self.digest():
                on_mismatch(position)
        with self.stream:
            batch = next(self.iterator)
        self.fetched += 1
        return batch

    def __getattr__(self, name: str) -> Any:
        # Everything else (e.g. ``_dataloader``) is the wrapped iterator's.
        return getattr(self.__dict__['iterator'], name)

    def digest(self) -> str:
        """sha256 of where the stream's generators are after the batches fetched so far."""
        return self.stream.digest()

    def seek(self, batches: int) -> None:
        """Position a seekable stream (a dataset with ``skip_samples``, e.g.
        :class:`~mmclim.datasets.WebDatasetCaptions`) after ``batches`` batches of this rank.

        The dataset is told how many samples were consumed, the wrapped iterator is rebuilt (its
        worker processes, started with the old position, are shut down) and the next
        ``batches`` fetches, mmengine's replay, return None without reading anything.

        Args:
            batches (int): Batches this rank consumed (the resumed iteration).
        """
        loader = self.iterator._dataloader
        loader.dataset.skip_samples(batches * loader.batch_size, loader.batch_size,
                                    loader.drop_last)
        shutdown = getattr(getattr(self.iterator, '_iterator', None), '_shutdown_workers', None)
        if callable(shutdown):
            shutdown()
        self.iterator = type(self.iterator)(loader)
        self._skipping = batches

    def expect(self, position: int, digest: str, on_mismatch: Callable[[int], None]) -> None:
        """Check, once ``position`` batches have been fetched, that :meth:`digest` is ``digest``
        and call ``on_mismatch(position)`` if it is not (the replay drew differently: another
        dataset, pipeline, batch size or number of workers than the saved run's)."""
        self._expected = (position, digest, on_mismatch)


def unwrapped_model(runner: Runner) -> nn.Module:
    """The runner's model without its DDP-style wrapper."""
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def rank_state_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """The submodules of ``model`` that hold per-rank state, by qualified name."""
    return {
        name: module
        for name, module in model.named_modules()
        if callable(getattr(module, 'rank_state_dict', None))
        and callable(getattr(module, 'load_rank_state_dict', None))
    }


def capture_rank_state(runner: Runner) -> Dict[str, Any]:
    """This rank's state, in types ``torch.load(weights_only=True)`` reads.

    Returns:
        dict: ``'random'`` (the generators), ``'modules'`` (qualified name to the module's
        ``rank_state_dict()``, tensors on the CPU) and ``'data'`` (the training data stream's
        digest, or None outside an iteration-based training loop).
    """
    loop = getattr(runner, '_train_loop', None)
    iterator = getattr(loop, 'dataloader_iterator', None)
    modules = {
        name: {key: value.detach().cpu() if isinstance(value, Tensor) else value
               for key, value in module.rank_state_dict().items()}
        for name, module in rank_state_modules(unwrapped_model(runner)).items()
    }
    return {
        RANDOM: capture_random_states(),
        MODULES: modules,
        DATA: iterator.digest() if isinstance(iterator, ReplayableDataIterator) else None,
    }


def gather_rank_states(runner: Runner) -> List[Dict[str, Any]]:
    """:func:`capture_rank_state` of every rank, in rank order (a collective: all ranks call
    it)."""
    state = capture_rank_state(runner)
    return all_gather_object(state) if get_world_size() > 1 else [state]


def install_exact_resume() -> None:
    """Make ``Runner.save_checkpoint`` record :func:`gather_rank_states` in the checkpoint's
    ``meta``. Idempotent."""
    original = Runner.save_checkpoint
    if getattr(original, '_mmclim_rank_states', False):
        return
    signature = inspect.signature(original)

    @functools.wraps(original)
    def save_checkpoint(self: Runner, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        meta = bound.arguments.get('meta')
        bound.arguments['meta'] = dict(meta or {}, **{RANK_STATES_KEY: gather_rank_states(self)})
        return original(*bound.args, **bound.kwargs)

    save_checkpoint._mmclim_rank_states = True
    Runner.save_checkpoint = save_checkpoint
