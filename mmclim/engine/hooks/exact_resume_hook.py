# Copyright (c) mmclim contributors. All rights reserved.
import functools
import logging
from typing import Any, Dict, List, Optional

from mmdet.registry import HOOKS
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch.utils.data import IterableDataset

from ..exact_resume import (DATA, MODULES, RANDOM, RANK_STATES_KEY, ReplayableDataIterator,
                            rank_state_modules, unwrapped_model)
from ..random_states import RandomStream, isolated_random_states, restore_random_states

# Third entropy word of the training data's RandomStream (after the seed and the rank).
DATA_STREAM = 0x64617461  # b'data'
# The attribute marking a validation loop whose ``run`` no longer moves the generators.
ISOLATED_ATTR = '_mmclim_isolated_random_states'


def is_seekable(dataset: Any) -> bool:
    """Whether a dataset can start after consumed samples without reading them
    (``skip_samples(num_samples, batch_size, drop_last)``, e.g. a stream of shards)."""
    return callable(getattr(dataset, 'skip_samples', None))


def _warn(message: str) -> None:
    print_log(f'Resume is not exact: {message}', logger='current', level=logging.WARNING)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Makes a resumed run continue exactly as the uninterrupted one.

    A default hook of every runner once ``import mmclim`` has run (``default_hooks`` key
    ``exact_resume``; ``exact_resume=None`` turns it off). With the checkpoints'
    ``meta['rank_states']`` (:mod:`mmclim.engine.exact_resume`) it makes a resume at any saved
    iteration give the uninterrupted run's weights bitwise, on one process or several:

    * ``before_train``: an iteration-based loop's data iterator becomes a
      :class:`~mmclim.engine.exact_resume.ReplayableDataIterator` drawing from a stream seeded by
      ``(runner.seed, rank)``, so mmengine's replay of the data up to the resumed iteration
      rebuilds the saved run's data stream; the validation loop runs without moving the
      generators (a validation after a checkpoint's save would otherwise draw between the saved
      state and the next step, e.g. the seed of its data loader's iterator). On a resume, a
      seekable dataset (one with ``skip_samples``, such as the shard stream
      :class:`~mmclim.datasets.WebDatasetCaptions`) is positioned after the consumed samples
      instead, so the replay reads nothing.
    * ``before_train_epoch`` of the first epoch after a resume (this hook runs last): each rank
      restores its generators and its modules' ``rank_state_dict()``. After the replay, the
      data stream is checked against the saved one. In an epoch-based loop, a streamed
      dataset's ``set_epoch`` is called at every epoch.

    An epoch-based loop resumes exactly at its epoch-end checkpoints (it replays nothing).
    Whatever cannot be restored (a checkpoint saved without the states, another number of
    ranks, a data stream that replays differently, a seed drawn anew because the config has
    none) is a warning, and the run continues with fresh generators.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self._saved: Optional[List[Dict[str, Any]]] = None
        self._pending: Optional[Dict[str, Any]] = None
        self._seed_drawn = False

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the checkpoint's rank states until the training loop starts (a ``load_from``
        starts at iteration 0 and does not use them)."""
        meta = checkpoint.get('meta') or {}
        self._saved = meta.get(RANK_STATES_KEY)
        saved_seed = meta.get('seed')
        # Runner.resume sets the checkpoint's seed after loading; the data loader was built
        # with the one this process drew when the config has none.
        self._seed_drawn = (runner._randomness_cfg.get('seed') is None and saved_seed is not None
                            and saved_seed != runner.seed)

    def before_train(self, runner) -> None:
        """Isolate the data stream and the validation loop; check what a resume can restore."""
        loop = runner.train_loop
        rank, world_size = get_dist_info()
        iterator = getattr(loop, 'dataloader_iterator', None)
        if iterator is not None and not isinstance(iterator, ReplayableDataIterator):
            iterator = ReplayableDataIterator(iterator,
                                              RandomStream((runner.seed, rank, DATA_STREAM)))
            loop.dataloader_iterator = iterator
        val_loop = runner.val_loop
        if val_loop is not None and not getattr(val_loop, ISOLATED_ATTR, False):
            run = val_loop.run

            @functools.wraps(run)
            def isolated_run(*args: Any, **kwargs: Any) -> Any:
                with isolated_random_states():
                    return run(*args, **kwargs)

            val_loop.run = isolated_run
            setattr(val_loop, ISOLATED_ATTR, True)

        saved, self._saved = self._saved, None
        if loop.iter == 0 and loop.epoch == 0:
            return  # a new run (or load_from)
        seekable = isinstance(iterator, ReplayableDataIterator) and is_seekable(
            loop.dataloader.dataset)
        if seekable:
            iterator.seek(loop.iter)  # the replay reads nothing
        if self._seed_drawn:
            _warn(f'the config sets no randomness.seed, so this process built its data loader '
                  f'with a seed of its own before the checkpoint\'s {runner.seed} was restored; '
                  f'set randomness=dict(seed={runner.seed}) (tools/train.py --resume does)')
        if saved is None:
            _warn('the checkpoint holds no random-generator states (saved without mmclim); '
                  'the run continues with fresh generators')
            return
        if len(saved) != world_size:
            _warn(f'the checkpoint was saved by {len(saved)} processes, this run has '
                  f'{world_size}; the run continues with fresh generators')
            return
        self._pending = saved[rank]
        if isinstance(iterator, ReplayableDataIterator) and not seekable \
                and saved[rank][DATA] is not None:
            iterator.expect(
                loop.iter, saved[rank][DATA],
                lambda position: _warn(
                    f'after replaying {position} batches, rank {rank}\'s data stream is not the '
                    'saved run\'s (another dataset, pipeline, batch size or num_workers?)'))

    def before_train_epoch(self, runner) -> None:
        """Tell a streamed dataset of an epoch-based loop its epoch; restore this rank's
        generators and module states, last of all hooks, once."""
        dataset = runner.train_loop.dataloader.dataset
        if isinstance(dataset, IterableDataset) and callable(getattr(dataset, 'set_epoch', None)) \
                and not hasattr(runner.train_loop, 'dataloader_iterator'):
            dataset.set_epoch(runner.epoch)
        state, self._pending = self._pending, None
        if state is None:
            return
        modules = rank_state_modules(unwrapped_model(runner))
        for name, module_state in state[MODULES].items():
            if name not in modules:
                _warn(f'the checkpoint holds per-rank state of {name!r}, which the model lacks')
                continue
            modules[name].load_rank_state_dict(module_state)
        restore_random_states(state[RANDOM])
        print_log(
            f'Restored the random generators and per-rank module states ({len(state[MODULES])}) '
            f'saved at iteration {runner.iter}', logger='current')
