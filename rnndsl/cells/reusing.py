"""A compiled cell's calls on a lent `Workspace`'s buffers (base.py; the trainer lends
one), and the training step that runs forward, its loss and backward in one launch.

From one call of the same cell and shape to the next, each row block's argument lists
are kept, with every array in them that the caller never sees: the tapes and the rows'
copies of the inputs, outputs and cotangents, and with backward the gradients themselves
(`_Reused`); the (B, size) states go to the blocks as views of their rows. A training
step then allocates only what it returns, and marshals no argument list. `step_with`
goes further for a trainer: forward, its loss and backward in one launch of the row
blocks.

`ReusedBuffers` is a part of CompiledCell (compiled.py), which calls `_run_reusing` and
`_back_reusing` when a workspace is lent; its methods use CompiledCell's argument lists
(`_forward_args`, `_block_backward_args`) and launches (`_launch`, `_launch_jobs`).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..core.flat import flat_span
from ..kernels.blas import kernel_thread_count
from .base import Grads, Run, check_seen, check_workspace, lending
from .blocks import _CompiledTape, _RowBlock, _copy_pairs, _rows_of, _with_copies


class ReusedBuffers:
    """CompiledCell's calls on a Workspace's buffers, and `step_with` (module docstring)."""

    def _host_params(self) -> dict[str, np.ndarray]:
        """The kernels' param arrays (`_param`), as one dict that stays the same object
        while the cell's params are the same arrays: the workspace's argument lists are
        then up to date without a look. A param replaced makes a new dict (never this
        one changed: an earlier run's tape holds it). So does every call while a param
        is one the kernels read a copy of (not C-contiguous, or of another dtype): the
        kept copy would miss the caller's changes in place (an optimiser's step), and
        the kernels ran on the first values from the second step of training on."""
        kept = self.__dict__.get("_kept_params")
        current = self.params
        if kept is not None:
            sources, params = kept
            if len(current) == len(sources) and all(
                    current.get(name) is value for name, value in sources.items()):
                return params
        sources = {d.name: current.get(d.name) for d in self.spec.params}
        params = {d.name: self._param(d.name) for d in self.spec.params}
        if all(np.may_share_memory(params[name], sources[name]) for name in params):
            self._kept_params = (sources, params)
        else:
            self.__dict__.pop("_kept_params", None)
        return params

    def _arg_slots(self, which: str) -> dict[str, list[tuple[int, tuple]]]:
        """Where each kind of argument sits in a kernel's list: {kind: [(index, record)]}."""
        cache = self.__dict__.setdefault("_slots", {})
        if which not in cache:
            slots: dict[str, list] = {}
            for i, arg in enumerate(self.meta[f"{which}_args"]):
                slots.setdefault(arg[0], []).append((i, arg))
            cache[which] = slots
        return cache[which]

    def _reused(self, workspace, T: int, B: int, rows) -> "_Reused":
        """The workspace's buffers for a call of this cell at (T, B) split into `rows`,
        their generation moved on: a forward is about to write their tapes."""
        key = (self._token, T, B, tuple(rows))
        reused = workspace._entry(key, lambda: _Reused(key, rows, self._consts()))
        reused.generation += 1
        return reused

    def _forward_slots(self, reused, inputs, state0, T: int, B: int, params) -> tuple:
        """Each block's forward argument list made ready for this call: (outputs, final
        states). The final states are fresh (B, size) arrays whose rows each block
        writes through a view (a (B, size) array's rows are contiguous); the outputs are
        fresh (T, B, size) arrays with one block, which the kernel writes, and {} with
        several: each block writes its own (reused) ones, which its thread copies into
        their rows of the joined ones. With several blocks, each block's rows of the
        inputs are to be copied into its buffers on its thread (`copies_in`)."""
        slots = self._arg_slots("forward")
        single = len(reused.blocks) == 1
        finals = {d.name: self._empty(state0[d.name].shape) for d in self.spec.states}
        outputs = {}
        for block in reused.blocks:
            r0, r1 = block.r0, block.r1
            if block.forward is None:       # first use: the fresh path's list, kept
                mine = inputs if single else _rows_of(inputs, r0, r1, axis=1)
                block.forward, block.outputs, _, block.tapes = self._forward_args(
                    params, mine, {k: v[r0:r1] for k, v in state0.items()}, T, r1 - r0,
                    reused.consts, 1)
                block.inputs, block.params = mine, params
            args = block.forward
            if block.params is not params:
                _fill(args, slots, "param", params)
                block.params = params
            for i, arg in slots.get("state0", ()):
                args[i] = state0[arg[1]] if single else state0[arg[1]][r0:r1]
            for i, arg in slots.get("final", ()):
                args[i] = finals[arg[1]] if single else finals[arg[1]][r0:r1]
            if single:      # the caller's inputs in, fresh outputs out
                block.inputs = inputs
                for i, arg in slots.get("input", ()):
                    args[i] = inputs[arg[1]]
                for i, arg in slots.get("output", ()):
                    args[i] = outputs[arg[1]] = self._empty(self._output_shape(arg[1], T, B))
                for i, _ in slots.get("threads", ()):
                    args[i] = kernel_thread_count()
            else:           # the rows' copies of the inputs, made on the block's thread
                block.copies_in = [(mine, inputs[name][:, r0:r1])
                                   for name, mine in block.inputs.items()]
        return outputs, finals

    def _backward_slots(self, reused, taped, params, d_out, d_st, T: int, skip_inputs: bool,
                        own_cotangents: bool = False) -> None:
        """Each block's backward argument list made ready for this call (the run's
        blocks `taped`, its params). The initial states' gradients are (B, size) arrays
        of the workspace whose rows the blocks write, zeroed here; the final states'
        cotangents are rows of the caller's (or of zeros kept apart). The outputs'
        cotangents: with one block the caller's arrays; with several each block's own
        rows, to be copied into its buffers on its thread (`cotangents_in`); with
        `own_cotangents`, the block's own buffers
        (`_ReusedBlock.d_outputs`), which the caller writes (`_step_reusing`). Each
        block's param gradients are zeroed by whoever launches it."""
        slots = self._arg_slots("backward")
        single = len(reused.blocks) == 1
        if reused.state_grads is None:
            reused.state_grads = {d.name: self._zeros((reused.B,) + self._size(d))
                                  for d in self.spec.states}
            reused.zero_cotangents = {}
        for grad in reused.state_grads.values():
            grad.fill(0)
        for block, run_block in zip(reused.blocks, taped):
            r0, r1 = block.r0, block.r1
            block.cotangents_in = []
            if block.backward is None:      # first use: the fresh path's list, kept
                d_out_rows = d_out if single else _rows_of(d_out, r0, r1, axis=1)
                args, grads, block.input_grads, _ = self._block_backward_args(
                    run_block, params, reused.consts, d_out_rows,
                    {k: v[r0:r1] for k, v in d_st.items()}, T, skip_inputs, 1)
                block.backward, block.backward_params = args, params
                block.grad_flat = flat_span(list(grads.values()))
                block.grads = {d.name: grads[d.name].reshape(self._size(d))
                               for d in self.spec.params}
                assert block.grad_flat is not None, "param gradients are one flat buffer"
                block.d_outputs = {arg[1]: (args[i] if not single else
                                            np.zeros_like(args[i]))
                                   for i, arg in slots.get("output_grad", ())}
            args = block.backward
            if block.backward_params is not params:
                _fill(args, slots, "param", params)
                block.backward_params = params
            for i, arg in slots.get("input", ()):
                args[i] = run_block.inputs[arg[1]]
            for i, arg in slots.get("state0_grad", ()):
                args[i] = reused.state_grads[arg[1]][r0:r1]
            for i, arg in slots.get("final_grad", ()):
                given = d_st.get(arg[1])
                if given is None:       # zeros, kept apart from any array of the caller's
                    given = reused.zero_cotangents.get(arg[1])
                    if given is None:
                        given = reused.zero_cotangents[arg[1]] = np.zeros_like(
                            reused.state_grads[arg[1]])
                    elif r0 == 0:
                        given.fill(0)
                args[i] = given[r0:r1]
            for i, arg in slots.get("output_grad", ()):
                mine = block.d_outputs[arg[1]]
                value = None if own_cotangents else d_out.get(arg[1])
                if value is not None and single:
                    args[i] = value.reshape(mine.shape)
                    continue
                if value is None:
                    if not own_cotangents:
                        mine.fill(0)
                else:       # copied on the block's thread
                    block.cotangents_in.append((mine, value[:, r0:r1].reshape(mine.shape)))
                args[i] = mine
            if not skip_inputs:
                for grad in block.input_grads.values():
                    grad.fill(0)
            for i, _ in slots.get("input_grads", ()):
                args[i] = not skip_inputs
            for i, _ in slots.get("threads", ()):
                args[i] = kernel_thread_count() if single else 1

    def _gradients_of(self, reused, skip_inputs: bool) -> tuple[dict, dict, dict]:
        """After the backward kernels: (params shaped, inputs, states), the blocks' weight
        gradients added into the first block's (the workspace's arrays)."""
        first = reused.blocks[0]
        for block in reused.blocks[1:]:     # each block's rows' share of the weights'
            np.add(first.grad_flat, block.grad_flat, out=first.grad_flat)
        if len(reused.blocks) == 1:
            inputs = dict(first.input_grads)
        else:       # joined by the blocks' threads (_back_reusing)
            inputs = {} if skip_inputs else reused.input_grads
        return dict(first.grads), inputs, dict(reused.state_grads)

    def _run_reusing(self, workspace, inputs, state0, T: int, B: int, params, rows):
        """The forward's kernel calls on the workspace's buffers (module docstring):
        (outputs, finals, row blocks, the _Reused), outputs and finals fresh arrays."""
        reused = self._reused(workspace, T, B, rows)
        outputs, finals = self._forward_slots(reused, inputs, state0, T, B, params)
        forward = self.meta["forward"]
        if len(reused.blocks) == 1:
            self._launch(forward, reused.blocks[0].forward)
        else:   # each block's thread copies its rows in, and its outputs into theirs
            outputs = {name: self._empty(self._output_shape(name, T, B))
                       for name in reused.blocks[0].outputs}
            self._launch_jobs([(_with_copies, (
                forward, b.forward, b.copies_in,
                [(self._output_rows(outputs[name], name, b.r0, b.r1), y)
                 for name, y in b.outputs.items()])) for b in reused.blocks])
        blocks = tuple(_RowBlock(b.r0, b.r1, b.tapes, b.inputs) for b in reused.blocks)
        return outputs, finals, blocks, reused

    def _back_reusing(self, tape: _CompiledTape, d_out, d_st, T: int, skip_inputs: bool):
        """The backward's kernel calls on the buffers of the workspace that the run's
        forward used, which hold the gradients: (params shaped, inputs, states)."""
        reused = tape.reused
        self._backward_slots(reused, tape.blocks, tape.params, d_out, d_st, T, skip_inputs)
        for block in reused.blocks:
            block.grad_flat.fill(0)
        backward = self.meta["backward"]
        if len(reused.blocks) == 1:
            self._launch(backward, reused.blocks[0].backward)
        else:   # each block's thread copies its cotangents in, its inputs' gradients out
            grads = reused.blocks[0].input_grads
            reused.input_grads = {name: self._empty((T, reused.B) + g.shape[2:])
                                  for name, g in grads.items()}
            self._launch_jobs([(_with_copies, (
                backward, b.backward, b.cotangents_in,
                [] if skip_inputs else [(reused.input_grads[name][:, b.r0:b.r1], g)
                                        for name, g in b.input_grads.items()]))
                for b in reused.blocks])
        return self._gradients_of(reused, skip_inputs)

    # ------------------------------------------------------------------ a training step
    def step_with(self, x, between, state=None, *, dropout=None, workspace):
        """A training step's forward and backward (without the inputs' gradients) in one
        launch of the row blocks, lent `workspace`: each block's thread runs its
        forward kernel, then `between(k, r0, r1, outputs, d_outputs)` with its outputs
        (T, rows, ...) and the arrays to write their cotangents into (the block's own,
        which its backward kernel reads), and if that returns True, its backward kernel.
        A block's loss then runs on its own thread, no cotangent is copied, the step
        is one hand-over of threads instead of two, and each thread copies its block's
        rows of the outputs into the run's last, beside the other blocks' kernels
        (issue 19: the main job's step spent 2.2 ms outside its kernels through forward,
        loss and backward, 1.3 ms so).

        Returns (run, grads), as forward and backward lent `workspace` would; grads is
        None if a `between` refused (the gradients are then not whole; the run is).
        None for a call this way does not take (another target, `input once` inputs,
        `final` outputs, a call a LayerLoops cell runs per layer): forward, a loss and
        backward then.

        The run's inputs and params are checked and fingerprinted as forward does
        them, and checked again before the first block's backward (rnndsl.cells.seen)."""
        choose = getattr(self, "_choice", None)     # cells.network.LayerLoops
        if self.target != "cpu" or (choose is not None and choose(x, None) != "fused") \
                or any(d.once for d in self.spec.inputs) or self._final_outputs():
            return None
        check_workspace(workspace)
        with lending(workspace):
            return self._step_reusing(x, between, state, dropout, workspace)

    def _step_reusing(self, x, between, state, dropout, workspace):
        inputs, state0, from_params, T, B, _, read = self._prepare(
            x, state, self._hidden(None, dropout))
        params = self._host_params()
        seen = self._seen_of(params, read)
        rows = self._row_blocks(B)
        reused = self._reused(workspace, T, B, rows)
        outputs, finals = self._forward_slots(reused, inputs, state0, T, B, params)
        blocks = tuple(_RowBlock(b.r0, b.r1, b.tapes, b.inputs) for b in reused.blocks)
        tape = _CompiledTape(blocks, reused.consts, self._token, frozenset(from_params),
                             False, params, seen, reused, reused.generation)
        skip_inputs = "input_grads" in self._arg_slots("backward")
        self._backward_slots(reused, blocks, params, {}, {}, T, skip_inputs,
                             own_cotangents=True)
        single = len(rows) == 1
        if not single:
            outputs = {name: self._empty((T, B) + y.shape[2:])
                       for name, y in reused.blocks[0].outputs.items()}
        went_on = [False] * len(rows)
        forward, backward = self.meta["forward"], self.meta["backward"]

        def job(k: int) -> None:
            block = reused.blocks[k]
            if not single:
                _copy_pairs(block.copies_in)
            forward(*block.forward)
            try:
                if not between(k, block.r0, block.r1,
                               outputs if single else block.outputs, block.d_outputs):
                    return
                if k == 0:
                    check_seen(tape)
                block.grad_flat.fill(0)
                backward(*block.backward)
                went_on[k] = True
            finally:    # its rows of the run's outputs: beside the other blocks' kernels
                if not single:
                    for name, y in block.outputs.items():
                        outputs[name][:, block.r0:block.r1] = y

        self._wait_for_backward_compile()
        if single:
            self._launch(job, (0,))
        else:
            self._launch_jobs([(job, (k,)) for k in range(len(rows))])
        run = Run(self._shown(outputs), finals, T, B, tape)
        if not all(went_on):
            return run, None
        params, inputs, state = self._gradients_of(reused, skip_inputs)
        for d in self.spec.states:
            if d.name in tape.from_params:
                params[d.init.name] = self._plus_batch_sum(params[d.init.name],
                                                           state[d.name])
        return run, Grads(params, {}, state)


def _fill(args: list, slots: dict, kind: str, values: Mapping) -> None:
    """Put the arrays of `values` in the argument slots of `kind` (`_arg_slots`)."""
    for i, arg in slots.get(kind, ()):
        args[i] = values[arg[1]]


class _Reused:
    """A Workspace's buffers for one cell, (T, B) and row split (cpu): for each row
    block, its forward's and backward's argument lists (built at their first use, by
    the path that makes fresh arrays) and the arrays in them that no caller sees; and
    the initial states' gradients, (B, size) arrays whose rows the blocks write.
    `generation` counts the forwards that wrote its tapes: a run holds the count it
    wrote, and its backward refuses once another forward moved it on."""

    def __init__(self, key, rows, consts):
        self.key = key
        self.consts = consts
        self.B = rows[-1][1]
        self.generation = 0
        self.blocks = [_ReusedBlock(r0, r1) for r0, r1 in rows]
        self.state_grads = self.zero_cotangents = None
        self.input_grads: dict = {}       # the inputs' gradients, joined (several blocks)


class _ReusedBlock:
    """One row block's part of a `_Reused` (its fields: `_run_reusing`, `_back_reusing`)."""

    def __init__(self, r0: int, r1: int):
        self.r0, self.r1 = r0, r1
        self.forward = self.backward = None       # the argument lists
        self.params = self.backward_params = None  # the param dict each list holds
        self.inputs = self.outputs = self.tapes = None
        self.grad_flat = self.grads = self.input_grads = None
        self.d_outputs: dict = {}         # the outputs' cotangents this block's kernel reads
        # (its array, the caller's rows) to copy on its thread before its next forward
        # and backward kernel, with several blocks (_forward_slots, _backward_slots)
        self.copies_in: list = []
        self.cotangents_in: list = []
