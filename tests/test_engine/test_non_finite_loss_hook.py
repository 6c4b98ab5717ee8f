# Copyright (c) mmclim contributors. All rights reserved.
"""A non-finite loss stops the run (default) or skips the step, the same on every rank."""
import multiprocessing
import os
import re
import traceback
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import torch
from conftest import free_port, isolated_runner_globals, single_threaded_after_fork
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from toy_regression import NAN_TERM, toy_config

import mmclim  # noqa: F401  (installs the default hooks)
from mmclim.engine import NonFiniteLossError, NonFiniteLossHook, build_runner

JOIN_TIMEOUT_S = 120
STOPPED_EXIT_CODE = 3


@pytest.fixture(autouse=True)
def _isolated_runner_globals() -> Iterator[None]:
    with isolated_runner_globals():
        yield


def _runner(work_dir: Path, **kwargs: Any) -> Runner:
    return Runner.from_cfg(toy_config(str(work_dir), f'nonfinite_{uuid.uuid4().hex}', **kwargs))


def _non_finite_loss_hooks(runner: Runner) -> List[NonFiniteLossHook]:
    return [hook for hook in runner.hooks if isinstance(hook, NonFiniteLossHook)]


def test_every_runner_stops_on_non_finite_losses_by_default(tmp_path: Path) -> None:
    hooks = _non_finite_loss_hooks(_runner(tmp_path / 'default'))
    assert [hook.action for hook in hooks] == ['stop']


@pytest.mark.parametrize('default_hooks, custom_hooks, actions', [
    (dict(non_finite_loss=dict(action='skip')), [], ['skip']),
    (dict(non_finite_loss=dict(type='NonFiniteLossHook', action='skip')), [], ['skip']),
    (dict(non_finite_loss=None), [], []),
    (dict(), [dict(type='NonFiniteLossHook', action='skip')], ['skip']),
])
def test_configs_set_the_action_or_turn_the_hook_off(tmp_path: Path, default_hooks: dict,
                                                     custom_hooks: list,
                                                     actions: List[str]) -> None:
    cfg = toy_config(str(tmp_path), f'nonfinite_{uuid.uuid4().hex}')
    cfg.default_hooks.update(default_hooks)
    cfg.custom_hooks = custom_hooks
    cfg.default_scope = 'mmdet'  # where NonFiniteLossHook is registered, as in mmdet configs
    assert [hook.action for hook in _non_finite_loss_hooks(Runner.from_cfg(cfg))] == actions


def test_an_unknown_action_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"default_hooks.non_finite_loss.action.*'halt'"):
        NonFiniteLossHook(action='halt')


def test_a_nan_loss_stops_the_run_naming_the_iteration_and_the_term(tmp_path: Path) -> None:
    runner = _runner(tmp_path, max_iters=5, nan_iters=[3])
    with pytest.raises(NonFiniteLossError,
                       match=rf'non-finite loss at iteration 3 \(epoch 1\): loss=nan, '
                       rf'{NAN_TERM}=nan; stopping'):
        runner.train()
    checkpoints = sorted(path.name for path in tmp_path.glob('iter_*.pth'))
    assert checkpoints == ['iter_1.pth', 'iter_2.pth']
    for name in checkpoints:
        state = torch.load(tmp_path / name, weights_only=True)['state_dict']
        assert all(bool(torch.isfinite(value).all()) for value in state.values()), name


@HOOKS.register_module(force=True)
class RecordTrainingState(Hook):
    """Records the parameters and the optimizer state around every training iteration."""

    def __init__(self) -> None:
        self.before: Dict[int, Dict[str, torch.Tensor]] = {}
        self.after: Dict[int, Dict[str, torch.Tensor]] = {}

    @staticmethod
    def _state(runner: Runner) -> Dict[str, torch.Tensor]:
        state = {f'param/{name}': value.detach().clone()
                 for name, value in runner.model.named_parameters()}
        for index, values in runner.optim_wrapper.optimizer.state_dict()['state'].items():
            state.update({f'optim/{index}/{key}': value.clone() for key, value in values.items()
                          if isinstance(value, torch.Tensor)})
        return state

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        self.before[runner.iter + 1] = self._state(runner)

    def after_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        self.after[runner.iter + 1] = self._state(runner)


def test_skip_leaves_the_parameters_and_optimizer_unchanged_and_goes_on(tmp_path: Path) -> None:
    cfg = toy_config(str(tmp_path), f'nonfinite_{uuid.uuid4().hex}', max_iters=4, nan_iters=[2])
    cfg.default_hooks.non_finite_loss = dict(action='skip')
    cfg.custom_hooks = [dict(type='RecordTrainingState')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 4
    assert _non_finite_loss_hooks(runner)[0].skipped_iters == [2]
    record = next(hook for hook in runner.hooks if isinstance(hook, RecordTrainingState))
    for iteration in (1, 2, 3, 4):
        before, after = record.before[iteration], record.after[iteration]
        # SGD's momentum buffers exist from the first step on
        assert any(key.startswith('optim/') for key in after) and (
            before.keys() == after.keys() or iteration == 1)
        unchanged = all(torch.equal(value, after[key]) for key, value in before.items())
        assert unchanged == (iteration == 2), iteration
    assert all(bool(torch.isfinite(value).all()) for value in record.after[4].values())
    log = '\n'.join(path.read_text() for path in tmp_path.glob('*/*.log'))
    assert f'non-finite loss at iteration 2 (epoch 1): loss=nan, {NAN_TERM}=nan; step skipped' \
        in log
    assert 'nan' not in re.search(r'Iter\(train\) \[4/4\].*', log).group(0)


def _train_rank(rank: int, port: int, work_dir: Path, action: str) -> None:
    """One of two gloo ranks; rank 1 alone has a NaN loss at iteration 2."""
    single_threaded_after_fork()
    code = 0
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
                          MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        cfg = toy_config(str(work_dir), 'nonfinite_ddp', max_iters=4, nan_iters=[2],
                         nan_ranks=[1])
        cfg.launcher = 'pytorch'
        cfg.default_hooks.non_finite_loss = dict(action=action)
        cfg.env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=JOIN_TIMEOUT_S))
        runner = build_runner(cfg)
        runner.train()
        model = runner.model.module
        torch.save({key: value.clone() for key, value in model.state_dict().items()},
                   work_dir / f'rank{rank}.pth')
    except NonFiniteLossError as error:
        (work_dir / f'rank{rank}.txt').write_text(str(error))
        code = STOPPED_EXIT_CODE
    except BaseException:
        traceback.print_exc()
        code = 1
    os._exit(code)


@pytest.mark.parametrize('action', ['stop', 'skip'])
def test_ranks_decide_together_when_one_rank_has_a_nan_loss(tmp_path: Path, action: str) -> None:
    context = multiprocessing.get_context('fork')
    port = free_port()
    processes = [context.Process(target=_train_rank, args=(rank, port, tmp_path, action))
                 for rank in (0, 1)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(JOIN_TIMEOUT_S)
    hung = [process.pid for process in processes if process.is_alive()]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert not hung, f'ranks {hung} hung'
    codes = [process.exitcode for process in processes]
    if action == 'stop':
        assert codes == [STOPPED_EXIT_CODE] * 2
        messages = [(tmp_path / f'rank{rank}.txt').read_text() for rank in (0, 1)]
        assert all(message.startswith('non-finite loss at iteration 2 ') for message in messages)
        assert f'{NAN_TERM}=nan' in messages[1] and 'another rank' in messages[0]
        assert not list(tmp_path.glob('iter_2.pth'))
    else:
        assert codes == [0, 0]
        states = [torch.load(tmp_path / f'rank{rank}.pth') for rank in (0, 1)]
        for key, value in states[0].items():
            assert bool(torch.isfinite(value).all()), key
            torch.testing.assert_close(states[1][key], value, rtol=0, atol=0)
