"""A function of GPU tensors captured once per input shape as a CUDA graph, then replayed.

At batch 1 on an H200 a request's network spends its time launching kernels, not running them: T = 1 and
T = 30 took the same 9.5-9.8 ms (benchmarks/gpu.py). A graph launches a whole run's kernels as one. Its memory
is its own: inputs are copied into tensors made for the capture, and outputs are copied out of the graph's,
so that a later replay cannot change what an earlier caller holds. Callers run one replay at a time (the
predictor's inference lock), as the graphs' tensors are shared.
"""

from collections import OrderedDict
from collections.abc import Callable

import torch

# Distinct input shapes kept captured (the trunk's batch grows with the requests that share it; the tail's
# with the samples asked for); the least recently used is dropped beyond this, with its memory.
MOST_GRAPHS = 8
# Runs before a capture, on a side stream as capture asks: cuDNN chooses its kernels for the shape, and
# lazily made state is made, outside the graph.
WARM_UP_RUNS = 3


class CapturedGraph:
    def __init__(self, function: Callable[..., tuple[torch.Tensor, ...]], inputs: tuple[torch.Tensor, ...]) -> None:
        # Made outside inference mode (gradients still off): a capture begun in it updates tensors that inference
        # mode made (pytorch/pytorch#166792), and replays copy into these inputs from within it, which normal
        # tensors allow.
        with torch.inference_mode(False), torch.no_grad():
            self.inputs = tuple(tensor.clone() for tensor in inputs)
            side_stream = torch.cuda.Stream()
            side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side_stream):
                for _ in range(WARM_UP_RUNS):
                    function(*self.inputs)
            torch.cuda.current_stream().wait_stream(side_stream)
            self.graph = torch.cuda.CUDAGraph()
            # Only this thread's calls are checked during the capture: a server's other threads work on (PNG
            # encoding, decoding) meanwhile, never on the GPU outside the inference lock.
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                self.outputs = tuple(function(*self.inputs))

    def replay(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        for captured, given in zip(self.inputs, inputs, strict=True):
            captured.copy_(given)
        self.graph.replay()
        return tuple(output.clone() for output in self.outputs)


class CudaGraphs:
    """`function(*tensors) -> tuple of tensors`, pure GPU work (no copy to the host, no data-dependent Python), as
    graphs keyed by its inputs' shapes and types. Under autocast, `function` must disable autocast's cache
    (`cache_enabled=False`): a cached cast made during capture would be freed while the graph still uses it."""

    def __init__(self, function: Callable[..., tuple[torch.Tensor, ...]]) -> None:
        self.function = function
        self.graphs: OrderedDict[tuple, CapturedGraph] = OrderedDict()

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        key = tuple((tuple(tensor.shape), tensor.dtype) for tensor in inputs)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = CapturedGraph(self.function, inputs)
            if len(self.graphs) > MOST_GRAPHS:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        return graph.replay(inputs)
