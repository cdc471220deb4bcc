"""Training pairs kept on the training device and augmented there, a whole batch at once, image and mask together.

The CPU path (training/data.py) augments one item at a time in loader processes: torchvision's v2 transforms
on each pair, and the camera shifts in NumPy. On a GPU that caps training near 2,000 images/s whatever the
batch (5–7 ms an item on one core, 12 processes). Here the pairs are decoded once into uint8 tensors on the
device (9,070 pairs at 192 px: 1.3 GB; all 11,800: 1.7 GB), and each step draws its own parameters per item
and applies them as a few batched tensor operations:

- geometry: a flip either way, a rotation by any angle, a scale in [0.85, 1.2] and a shift of up to 5 %, one
  affine matrix per item, sampled by `grid_sample` (bilinear for the image, the mask cut at one half), as
  v2.RandomAffine and the flips do on the CPU;
- colour: brightness, contrast and saturation within ±20 % and a hue turn of up to ±0.03 of a turn, as
  v2.ColorJitter;
- camera: the cheap part of imaging/shifts.py (a colour cast, an exposure curve, a vignette), drawn per item.
  Blur, resolution and JPEG stay on the CPU path: they do not batch.

torchvision's v2 transforms draw one set of parameters per call, so on a batch every item would turn the same
way; looping over the items costs thousands of kernel launches a step. The same maths as one matrix per item
is what `affine_grid` exists for.
"""

import math

import torch
import torch.nn.functional as F

# The luma weights v2's saturation and contrast use (ITU-R 601).
LUMA = (0.299, 0.587, 0.114)


def uniform(count: int, low: float, high: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator, device=device)


def affine_matrices(count: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """count×2×3 matrices mapping output to input coordinates in [-1, 1]: flip, turn, scale and shift."""
    angle = uniform(count, -math.pi, math.pi, generator, device)
    scale = uniform(count, 0.85, 1.2, generator, device)
    flip_x = torch.where(torch.rand(count, generator=generator, device=device) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(count, generator=generator, device=device) < 0.5, -1.0, 1.0)
    # A shift of 5 % of the side is 0.1 in [-1, 1] coordinates.
    shift = uniform(2 * count, -0.1, 0.1, generator, device).reshape(count, 2)
    cosine, sine = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack(
        [
            torch.stack([cosine * flip_x, -sine * flip_y, shift[:, 0]], dim=1),
            torch.stack([sine * flip_x, cosine * flip_y, shift[:, 1]], dim=1),
        ],
        dim=1,
    )


def luma(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(LUMA, device=images.device, dtype=images.dtype).reshape(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def jitter_colour(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """images N×3×S×S in [0, 1] -> brightness, contrast, saturation and hue jittered per item."""
    count, device = images.shape[0], images.device

    def factor(low: float, high: float) -> torch.Tensor:
        return uniform(count, low, high, generator, device).reshape(count, 1, 1, 1)

    images = images * factor(0.8, 1.2)
    grey_mean = luma(images).mean(dim=(2, 3), keepdim=True)
    images = grey_mean + (images - grey_mean) * factor(0.8, 1.2)
    grey = luma(images)
    images = grey + (images - grey) * factor(0.8, 1.2)
    # A hue turn is a rotation about the grey axis (YIQ's I and Q plane).
    turn = uniform(count, -0.03, 0.03, generator, device) * 2 * math.pi
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=device, dtype=images.dtype
    )
    rotation = torch.zeros(count, 3, 3, device=device, dtype=images.dtype)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(turn), -torch.sin(turn)
    rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(turn), torch.cos(turn)
    colour = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # count×3×3
    images = torch.einsum("nij,njhw->nihw", colour, images)
    return images.clamp(0.0, 1.0)


def shift_camera(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Another device's colour cast, exposure curve and vignette, drawn per item (images in [0, 1])."""
    count, device = images.shape[0], images.device
    size = images.shape[-1]
    cast = uniform(3 * count, 0.85, 1.15, generator, device).reshape(count, 3, 1, 1)
    gamma = torch.exp(uniform(count, math.log(0.7), math.log(1.4), generator, device)).reshape(count, 1, 1, 1)
    images = (images * cast).clamp(0.0, 1.0) ** gamma
    # A vignette darkening the corners by up to 40 %, on half the items.
    strength = uniform(count, 0.0, 0.4, generator, device) * (
        torch.rand(count, generator=generator, device=device) < 0.5
    )
    axis = torch.linspace(-1.0, 1.0, size, device=device, dtype=images.dtype)
    radius_squared = (axis[None, :] ** 2 + axis[:, None] ** 2) / 2.0
    return images * (1.0 - strength.reshape(count, 1, 1, 1) * radius_squared)


class DevicePairs:
    """Square uint8 pairs resident on `device`; `batch` gives them augmented and normalised as the model takes
    them: (N×3×S×S float image, N×1×S×S float mask), as AugmentedPairs does item by item."""

    def __init__(
        self,
        images,
        masks,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        camera_shifts: bool = True,
    ) -> None:
        self.images = torch.as_tensor(images).to(device).permute(0, 3, 1, 2).contiguous()  # N×3×S×S uint8
        self.masks = torch.as_tensor(masks).to(device)[:, None]  # N×1×S×S uint8
        self.mean = torch.tensor(mean, device=device).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).reshape(1, 3, 1, 1)
        self.camera_shifts = camera_shifts
        self.device = device

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = torch.as_tensor(indices, device=self.device)
        images = self.images[chosen].float() / 255.0
        masks = self.masks[chosen].float()
        if self.camera_shifts:
            images = shift_camera(images, generator)
        grid = F.affine_grid(affine_matrices(len(chosen), generator, self.device), list(images.shape), False)
        # Outside the picture is black skin-free border, as v2.RandomAffine's default fill of 0.
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        masks = (F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()
        images = jitter_colour(images, generator)
        return (images - self.mean) / self.std, masks
