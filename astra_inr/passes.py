"""The two differentiable passes of a training step, and their CUDA-graph capture.

A training step is

    image      = RenderPass(coords[, support])       network -> constrained image
    proj       = A image                             ASTRA (eager: it synchronises)
    loss, res  = LossPass(proj, image, y, Wy, ||y||, tv_factor)
    loss.backward()                                  ... A^T, then the network's backward

On a GPU, a small problem's step is bound by the host: every kernel launch
costs microseconds of Python and driver time, and the network's passes and
the loss are dozens of small kernels.  :func:`graph_passes` captures the two
passes with :func:`torch.cuda.make_graphed_callables`, so that each becomes
one CUDA graph replay forwards and one backwards, while the ASTRA calls
between them stay ordinary calls.  Everything a pass reads that changes from
step to step (the slab's coordinates, support, data and norm, the TV factor)
is an argument, copied into the graph's fixed input buffers at each call;
what is fixed per capture (the network, the image shape and scale, the
bounds, the data's normalisation) is baked in, so a capture belongs to one
network and one step shape.

Where the projection is a sparse matrix product on torch's stream
(:class:`~astra_inr.matrix.MatrixOperator`) and every step trains the same
voxels, nothing in a step needs the host: :class:`StepGraph` captures the
whole step, the optimiser's update and the TV rule included, as one graph,
replayed with the learning rate and the TV factor read from device tensors.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import nn

from .objective import DataFit, TVGradientFilter, clamp_inward, total_variation

__all__ = ["LossPass", "RenderPass", "StepGraph", "constrained_image", "graph_passes",
           "quiet_side_stream_warning"]


def constrained_image(output: torch.Tensor, shape: tuple[int, ...], image_scale: float,
                      lo: float | None, hi: float | None,
                      support: torch.Tensor | None = None) -> torch.Tensor:
    """Network output (N,) -> image of ``shape`` in the data's units, bounded, masked.

    Parameters
    ----------
    output : torch.Tensor
        Dimensionless network output, N = prod(shape) values.
    shape : tuple of int
        Image shape, (rows, cols) or (slices, rows, cols).
    image_scale : float
        Data units per unit of network output.
    lo, hi : float or None
        Bounds (MinConstraint, MaxConstraint), gradient passing inwards.
    support : torch.Tensor, optional
        bool or float of ``shape``: where the image may be non-zero.
    """
    image = clamp_inward(image_scale * output.view(shape), lo, hi)
    return image if support is None else image * support


class RenderPass(nn.Module):
    """The network on one step's coordinates, as a constrained image.

    A module (not a function) so that graph capture sees the network's
    parameters as inputs of the backward pass.  Call with ``(coords,)`` or
    ``(coords, support)``: coordinates (N, ndim), support of ``shape``.
    """

    def __init__(self, network: nn.Module, shape: tuple[int, ...], image_scale: float,
                 lo: float | None, hi: float | None) -> None:
        super().__init__()
        self.network = network
        self.shape = tuple(shape)
        self.image_scale = float(image_scale)
        self.lo, self.hi = lo, hi

    def forward(self, coords: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
        return constrained_image(self.network(coords).float(), self.shape, self.image_scale,
                                 self.lo, self.hi, support)


class LossPass:
    """Data term plus TV of one step, and the step's relative data residual.

    Parameters
    ----------
    data_fit : DataFit
        Its weighting (its own data are not used: targets come as arguments).
    norm : float
        The data term's normalisation for this step's rows (``DataFit.targets``).
    tv_floor : float
        TVWeight; the weight in use is ``tv_floor * tv_factor``.
    mean_scale : float
        TV is taken of ``image / mean_scale`` (dimensionless).
    tv_slice_groups : int, optional
        A 3D batch's slices come in groups of this many neighbours
        (``total_variation``'s ``slice_groups``); None: consecutive slices.
    tv_filter : TVGradientFilter, optional
        Filters the TV term's gradient as the data term's is weighted
        (TVGradient 'matched'); None: TV's gradient as it is.
    """

    def __init__(self, data_fit: DataFit, norm: float, tv_floor: float,
                 mean_scale: float, tv_slice_groups: int | None = None,
                 tv_filter: TVGradientFilter | None = None) -> None:
        self.data_fit = data_fit
        self.norm = float(norm)
        self.tv_floor = float(tv_floor)
        self.mean_scale = float(mean_scale)
        self.tv_slice_groups = tv_slice_groups
        self.tv_filter = tv_filter

    def __call__(self, proj: torch.Tensor, image: torch.Tensor, y: torch.Tensor,
                 wy: torch.Tensor, y_norm: torch.Tensor,
                 tv_factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(loss, ||proj - y|| / y_norm)``; the loss is differentiable."""
        loss = self.data_fit.term(proj, y, wy, self.norm)
        if self.tv_floor > 0:
            tv_image = image / self.mean_scale
            if self.tv_filter is not None:
                tv_image = self.tv_filter(tv_image)
            loss = loss + (self.tv_floor * tv_factor) * total_variation(
                tv_image, slice_groups=self.tv_slice_groups)
        residual = (proj.detach() - y).norm() / y_norm
        return loss, residual


def quiet_side_stream_warning() -> None:
    """Silence PyTorch's warning about gradients produced on another stream than before.

    Graph warm-ups run on a side stream, so the parameters' gradient accumulators
    remember that stream and PyTorch warns at the first live backward; it costs one
    event wait and changes nothing (graphed and eager steps gave identical volumes on
    an H200).
    """
    warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream does not match")


def graph_passes(render: RenderPass, loss: LossPass, render_args: tuple[torch.Tensor, ...],
                 loss_args: tuple[torch.Tensor, ...]) -> tuple[Callable, Callable]:
    """Capture both passes as CUDA graphs (forward and backward), in one memory pool.

    Parameters
    ----------
    render, loss : RenderPass, LossPass
    render_args, loss_args : tuple of torch.Tensor
        Arguments of a real call, used for shapes only: they are cloned (a
        graph copies each call's arguments into its capture-time buffers,
        which must not be views of data that other steps read).

    Returns
    -------
    (render, loss) : callables with the same arguments, replaying the graphs.
        The render module itself is left untouched (its forward is not
        replaced), so the network is still usable on other shapes.

    Notes
    -----
    One backward pass per step, with the gradients set to None before it:
    the parameters' ``.grad`` may then be the graph's own output buffers
    (PyTorch issue 181723), which the next replay overwrites, so gradients
    must never be accumulated over several steps.
    """
    def clone(t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone().requires_grad_(t.requires_grad)

    quiet_side_stream_warning()

    wrapper = RenderPass(render.network, render.shape, render.image_scale, render.lo, render.hi)
    graphed_render, graphed_loss = torch.cuda.make_graphed_callables(
        (wrapper, loss), (tuple(map(clone, render_args)), tuple(map(clone, loss_args))),
        allow_unused_input=True)
    return graphed_render, graphed_loss


class StepGraph:
    """A whole training step captured as one CUDA graph.

    Parameters
    ----------
    step : callable
        Runs one step and returns its (loss, residual) tensors.  Everything it
        reads must be tensors that outlive the graph and are changed in place
        (parameters, optimiser state, learning rate, TV factor); it must have
        run eagerly a few times first (warm-up), as CUDA graph capture needs.
    context : callable
        Returns the context manager the step runs in (matrix-product precision).

    Notes
    -----
    Capturing records the kernels without running them: the capture is not a
    step.  The gradients become the graph's own buffers, overwritten (never
    accumulated) by each replay.
    """

    def __init__(self, step: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                 context: Callable) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with context(), torch.cuda.graph(self.graph):
            self.outputs = step()

    def replay(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the step; returns its (loss, residual), valid until the next replay."""
        self.graph.replay()
        return self.outputs
