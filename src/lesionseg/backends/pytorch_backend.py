"""PyTorch eager inference on the loaded network, on the CPU or a CUDA GPU.

On a GPU the network runs in bfloat16 autocast (float16 where the GPU has no bfloat16), in the plain NCHW
layout (on an H200 a 1024×768 request at T = 10 took 13.7 ms so, 16.2 ms channels-last: benchmarks/gpu.py),
with cuDNN choosing its fastest kernels for each input shape, and the trunk's features stay on the GPU
between the trunk and the tail. A served prediction's summary (each sample's sigmoid, their mean, standard
deviation and entropy, flipped views pooled) is made there too, in float32, by `sample_maps`: only the input,
the gate's descriptor and three model-sized maps cross the bus. `tail` still returns every sample's logits, in
float32, for calibration and evaluation, which read them. With `cuda_graphs`, the trunk and the summary are
each replayed as a CUDA graph (backends/cuda_graphs.py); benchmarks/gpu.py measures it against eager runs, and
it becomes a setting once a GPU run shows it pays.
"""

from functools import partial

import numpy as np
import torch

from lesionseg.backends.cuda_graphs import CudaGraphs
from lesionseg.model.network import SegmentationNetwork
from lesionseg.uncertainty.sampling import UncertaintyMaps


def resolve_device(requested: str) -> torch.device:
    """The torch device `requested` (lesionseg.devices) names here; one line of error where it is not."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            f"LESIONSEG_DEVICE / --device {requested}: PyTorch sees no CUDA GPU here (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda or 'none: a CPU-only build'}); give --device cpu or auto"
        )
    device = torch.device("cuda:0" if requested in ("auto", "cuda") else requested)
    if device.index >= torch.cuda.device_count():
        raise ValueError(
            f"LESIONSEG_DEVICE / --device {requested}: there is no such GPU; PyTorch sees "
            f"{torch.cuda.device_count()} (cuda:0 to cuda:{torch.cuda.device_count() - 1})"
        )
    return device


class TorchBackend:
    def __init__(
        self,
        model: SegmentationNetwork,
        input_size: int,
        threads: int = 0,
        device: str = "cpu",
        channels_last: bool = False,
        cuda_graphs: bool = False,
    ) -> None:
        """`channels_last` (on a GPU): the layout tensor-core convolutions take without a transpose; slower for
        this network's depthwise convolutions at batch 1 to 3, so off unless asked for. `cuda_graphs` (on a GPU;
        ignored on the CPU): the trunk and the summary replayed as CUDA graphs, one per input shape."""
        self.device = resolve_device(device)
        self.on_gpu = self.device.type == "cuda"
        self.input_size = input_size
        if threads:
            torch.set_num_threads(threads)
        self.dtype = torch.float32
        self.memory_format = torch.contiguous_format
        if self.on_gpu:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(self.device, memory_format=self.memory_format)
            torch.backends.cudnn.benchmark = True  # one input shape per view count: chosen once, then reused
        self.model = model.eval()
        self.placement = {"device": str(self.device), "precision": str(self.dtype).removeprefix("torch.")}
        self.graphed = self.on_gpu and cuda_graphs
        self.trunk_graphs = CudaGraphs(self.device_trunk) if self.graphed else None
        self.maps_graphs: dict[int, CudaGraphs] = {}  # by the trunk's number of levels: one, for one network
        if self.graphed:
            self.placement["cuda_graphs"] = "trunk and summary"

    def autocast(self) -> torch.autocast:
        # A graph replays the casts it captured; a cached cast would be freed under it (backends/cuda_graphs.py).
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.on_gpu, cache_enabled=not self.graphed)

    def device_trunk(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The trunk's levels, then the image descriptors in float32, where `batch` is."""
        with self.autocast():
            levels, descriptor = self.model.forward_trunk_and_descriptor(batch)
        return (*levels, descriptor.float())

    @torch.inference_mode()
    def trunk(self, images: np.ndarray) -> tuple[list[np.ndarray | torch.Tensor], np.ndarray]:
        batch = torch.from_numpy(images)
        if self.on_gpu:
            batch = batch.to(self.device).contiguous(memory_format=self.memory_format)
        *levels, descriptor = self.trunk_graphs(batch) if self.trunk_graphs is not None else self.device_trunk(batch)
        descriptor = descriptor.cpu().numpy()
        if self.on_gpu:
            return list(levels), descriptor
        return [level.numpy() for level in levels], descriptor

    def device_logits(self, trunk: list[np.ndarray | torch.Tensor], masks: list[np.ndarray]) -> torch.Tensor:
        levels = [torch.as_tensor(level, device=self.device) for level in trunk]
        channel_masks = [torch.from_numpy(mask).to(self.device) for mask in masks]
        with self.autocast():
            logits = self.model.forward_samples(levels, (self.input_size, self.input_size), channel_masks)
        return logits.float()

    @torch.inference_mode()
    def tail(self, trunk: list[np.ndarray | torch.Tensor], masks: list[np.ndarray]) -> np.ndarray:
        return self.device_logits(trunk, masks).cpu().numpy()

    @torch.inference_mode()
    def sample_maps(
        self, trunk: list[np.ndarray | torch.Tensor], masks: list[np.ndarray], views: int, temperature: float
    ) -> UncertaintyMaps:
        """One image's summary, from the trunk of its `views` (1, or 3 with flip TTA: as given, flipped
        left-right, flipped upside down) and T samples' masks a view: the maps `summarise(pooled_views(...))`
        makes from `tail`'s logits, made where the logits are."""
        levels = [torch.as_tensor(level, device=self.device) for level in trunk]
        channel_masks = [torch.from_numpy(mask).to(self.device) for mask in masks]
        assert levels[0].shape[0] == views, "one image's views: the trunk has a row each"
        if self.graphed:
            if len(levels) not in self.maps_graphs:
                self.maps_graphs[len(levels)] = CudaGraphs(partial(self.device_maps, len(levels)))
            temperature_tensor = torch.tensor(temperature, dtype=torch.float32, device=self.device)
            maps = self.maps_graphs[len(levels)](*levels, *channel_masks, temperature_tensor)
        else:
            maps = self.device_maps(len(levels), *levels, *channel_masks, temperature)
        mean, standard_deviation, entropy = (values.cpu().numpy() for values in maps)
        return UncertaintyMaps(mean_probability=mean, uncertainty_std=standard_deviation, predictive_entropy=entropy)

    def device_maps(self, level_count: int, *tensors: torch.Tensor | float) -> tuple[torch.Tensor, ...]:
        """(the trunk's `level_count` levels of one image's views, each dropout layer's channel masks, the
        temperature) -> its mean probability, standard deviation and entropy (1×S×S each), where the levels are."""
        levels, masks, temperature = tensors[:level_count], tensors[level_count:-1], tensors[-1]
        with self.autocast():
            logits = self.model.forward_samples(list(levels), (self.input_size, self.input_size), list(masks))
        logits = logits.float()
        return summary_of_views(logits.reshape(levels[0].shape[0], -1, *logits.shape[-2:]), temperature)


def summary_of_views(logits: torch.Tensor, temperature: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """logits V×T×S×S of one image's views -> its mean probability, standard deviation and entropy (1×S×S each),
    each view flipped back first; in float32, as uncertainty.sampling.summarise does in NumPy (the same clip at
    ±30, the same clamp for the entropy)."""
    if logits.shape[0] == 3:
        logits = torch.cat([logits[0], logits[1].flip(-1), logits[2].flip(-2)])[None]
    probabilities = torch.sigmoid(logits.clamp(-30.0, 30.0) * (1.0 / temperature))
    mean = probabilities.mean(dim=1)
    clamped = mean.clamp(1e-7, 1 - 1e-7)
    entropy = -(clamped * torch.log2(clamped) + (1 - clamped) * torch.log2(1 - clamped))
    return mean, probabilities.std(dim=1, unbiased=False), entropy
