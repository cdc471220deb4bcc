"""Training pairs kept on the training device and augmented there, a whole batch at once, image and mask together.

The CPU path (training/data.py) augments one item at a time in loader processes: torchvision's v2 transforms
on each pair, and the camera shifts in NumPy. On a GPU that caps training near 2,000 images/s whatever the
batch (5–7 ms an item on one core, 12 processes). Here the pairs are decoded once into uint8 tensors on the
device (9,070 pairs at 192 px: 1.3 GB; all 11,800: 1.7 GB), and each step draws its own parameters per item
and applies them as a few batched tensor operations, in the CPU path's order (AugmentedPairs shifts the camera
on the picture as stored, then the v2 transforms turn it and jitter its colour):

- camera (`camera_shifts`), each item drawing its own, with `random_camera_shift`'s probabilities and ranges
  for the zoom and the optics:
  - a zoom on the lesion (0.3 of the items, 1.1–2.2×, centred on the mask's centre), one affine matrix per
    item, image and mask sampled together;
  - a colour cast, an exposure curve and a vignette;
  - blur (0.2; sigma 0.002–0.012 of the side): one grouped, separable convolution, the batch's items and
    channels as groups, the identity kernel for an item not blurred;
  - a lower resolution (0.2; a shorter side of 48–160 px, shrunk as OpenCV's INTER_AREA and enlarged
    bilinearly): both are linear, so each item's round trip is one matrix a side, two batched products in all;
  - JPEG recompression (0.25; quality 15–79): JFIF colour, 4:2:0 chroma, the 8×8 DCT as matrix products and
    the IJG tables scaled to each item's quality, the codec's loss without a codec;
- geometry: a flip either way, a rotation by any angle, a scale in [0.85, 1.2] and a shift of up to 5 %, one
  affine matrix per item, sampled by `grid_sample` (bilinear for the image, the mask cut at one half), as
  v2.RandomAffine and the flips do on the CPU;
- colour: brightness, contrast and saturation within ±20 % and a hue turn of up to ±0.03 of a turn, as
  v2.ColorJitter.

torchvision's v2 transforms draw one set of parameters per call, so on a batch every item would turn the same
way; looping over the items costs thousands of kernel launches a step. The same maths as one matrix per item
is what `affine_grid` exists for.
"""

import math

import torch
import torch.nn.functional as F

# The luma weights v2's saturation and contrast use (ITU-R 601).
LUMA = (0.299, 0.587, 0.114)

# random_camera_shift's (imaging/shifts.py) probabilities and ranges, so both paths train on the same shifts.
ZOOM_PROBABILITY, ZOOM_FACTORS = 0.3, (1.1, 2.2)
BLUR_PROBABILITY, BLUR_SIGMA_FRACTIONS = 0.2, (0.002, 0.012)
RESOLUTION_PROBABILITY, SHORTER_SIDES = 0.2, (48, 160)
JPEG_PROBABILITY, JPEG_QUALITIES = 0.25, (15, 80)

# JPEG's standard tables (ITU-T T.81 Annex K, as libjpeg's jcparam.c): quality 50, in natural order.
LUMINANCE_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMINANCE_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8,) * 4,
)
# JFIF's colour conversion (full-range ITU-R 601), chroma centred on 0.
YCBCR_FROM_RGB = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
RGB_FROM_YCBCR = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


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


def resample(
    images: torch.Tensor, masks: torch.Tensor, matrices: torch.Tensor, outside: str = "zeros", soft: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and mask through the same count×2×3 matrices (output to input, in [-1, 1]); `outside` is
    grid_sample's padding mode for what comes from beyond the picture. A mask is cut at one half, so it stays
    0 or 1; a `soft` one (distillation's targets) keeps its interpolated probabilities."""
    grid = F.affine_grid(matrices, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode=outside, align_corners=False)
    masks = F.grid_sample(masks, grid, mode="bilinear", padding_mode=outside, align_corners=False)
    return images, masks if soft else (masks > 0.5).float()


def zoom_matrices(masks: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """count×2×3 matrices of a close-up by `factors`, centred on each mask's centre (the picture's if the mask is
    empty) and kept inside the picture, as `zoom_on_lesion`; a factor of 1 is the identity."""
    height, width = masks.shape[-2:]
    area = masks.sum(dim=(1, 2, 3)).clamp(min=1.0)
    half_window = 1.0 / factors  # the window's half side, in [-1, 1] coordinates

    def centre(profile: torch.Tensor, length: int) -> torch.Tensor:
        pixel_centres = (2 * torch.arange(length, device=masks.device, dtype=masks.dtype) + 1) / length - 1
        mean = (profile * pixel_centres).sum(dim=1) / area
        return torch.maximum(torch.minimum(mean, 1 - half_window), half_window - 1)

    centre_x = centre(masks.sum(dim=(1, 2)), width)
    centre_y = centre(masks.sum(dim=(1, 3)), height)
    zeros = torch.zeros_like(factors)
    return torch.stack(
        [torch.stack([half_window, zeros, centre_x], dim=1), torch.stack([zeros, half_window, centre_y], dim=1)],
        dim=1,
    )


def zoom_on_lesions(
    images: torch.Tensor, masks: torch.Tensor, generator: torch.Generator, soft: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """A close-up on the lesion for some items, image and mask together, drawn as `random_camera_shift` does."""
    count, device = images.shape[0], images.device
    zoomed = torch.rand(count, generator=generator, device=device) < ZOOM_PROBABILITY
    factors = torch.where(zoomed, uniform(count, *ZOOM_FACTORS, generator, device), 1.0)
    # The window stays inside the picture, but its edge pixels read up to half a pixel beyond their centres:
    # repeated there, as cv2.resize does, not mixed with black.
    return resample(images, masks, zoom_matrices(masks, factors), outside="border", soft=soft)


def gaussian_radius(sigmas: torch.Tensor) -> torch.Tensor:
    """OpenCV's kernel for 8-bit pictures: cvRound(6 sigma + 1) taps, made odd, so about 3 sigma each side."""
    return torch.floor(torch.round(6 * sigmas + 1) / 2)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Each item blurred by its own Gaussian of `sigmas` pixels (0: left as it is), as cv2.GaussianBlur does,
    for sigmas up to the largest the blur draws at this size."""
    count, channels, height, width = images.shape
    largest_sigma = max(0.3, BLUR_SIGMA_FRACTIONS[1] * min(height, width))
    radius = int(gaussian_radius(torch.tensor(largest_sigma)))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype).reshape(1, -1)
    sigmas = sigmas.reshape(-1, 1)
    # One kernel size for the batch; each item's taps beyond its own radius are zero, as OpenCV cuts them. A
    # sigma of 0 leaves only the centre tap: the identity.
    weights = torch.exp(-(offsets**2) / (2 * sigmas.clamp(min=1e-6) ** 2)) * (offsets.abs() <= gaussian_radius(sigmas))
    kernels = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    groups = count * channels
    # BORDER_REFLECT_101, OpenCV's default, is torch's "reflect".
    planes = F.pad(images.reshape(1, groups, height, width), (radius,) * 4, mode="reflect")
    planes = F.conv2d(planes, kernels.reshape(groups, 1, 1, -1), groups=groups)
    planes = F.conv2d(planes, kernels.reshape(groups, 1, -1, 1), groups=groups)
    return planes.reshape(count, channels, height, width)


def shrink_and_enlarge_matrices(small: torch.Tensor, length: int, shrunk: torch.Tensor) -> torch.Tensor:
    """count×length×length: a line of `length` pixels shrunk to `small` by area (cv2.INTER_AREA) and enlarged
    back bilinearly (cv2.INTER_LINEAR). Both are linear, so the round trip is one matrix; the identity where
    not `shrunk`."""
    positions = torch.arange(length, device=small.device, dtype=small.dtype)
    scale = (length / small).reshape(-1, 1, 1)
    # Small pixel k is the mean of the line under [k·scale, (k+1)·scale), each pixel weighed by its overlap.
    small_index, large_index = positions.reshape(1, -1, 1), positions.reshape(1, 1, -1)
    overlap = torch.minimum(large_index + 1, (small_index + 1) * scale) - torch.maximum(
        large_index, small_index * scale
    )
    shrink = overlap.clamp(min=0.0) / scale
    # Pixel centres aligned: large pixel i reads the small line at (i + ½)/scale − ½, clamped to its ends.
    last = (small - 1).reshape(-1, 1)
    source = ((positions + 0.5) / scale.reshape(-1, 1) - 0.5).clamp(min=0.0)
    lower = torch.minimum(source.floor(), last)
    upper, fraction = torch.minimum(lower + 1, last), (source - lower)[..., None]
    small_columns = positions.reshape(1, 1, -1)
    enlarge = (1 - fraction) * (small_columns == lower[..., None]) + fraction * (small_columns == upper[..., None])
    identity = torch.eye(length, device=small.device, dtype=small.dtype)
    return torch.where(shrunk.reshape(-1, 1, 1), enlarge @ shrink, identity)


def lower_resolution(images: torch.Tensor, shorter_sides: torch.Tensor) -> torch.Tensor:
    """Each item shrunk until its shorter side is `shorter_sides` pixels and enlarged back, as
    `imaging.shifts.rescale` does; an item already that small is left as it is."""
    # Not F.interpolate: it takes one size a call, so items would share a few sizes in buckets, one call and one
    # wait on the device for each, and its antialiased shrink is a triangle filter, up to 9 levels blurrier
    # than INTER_AREA's box. One matrix per item keeps each item's own side, OpenCV's filters and no wait.
    height, width = images.shape[-2:]
    factors = shorter_sides / min(height, width)
    shrunk = factors < 1

    def matrices(length: int) -> torch.Tensor:
        return shrink_and_enlarge_matrices(torch.round(length * factors).clamp(min=1.0), length, shrunk)

    row_matrices = matrices(height)
    column_matrices = row_matrices if width == height else matrices(width)
    return row_matrices[:, None] @ images @ column_matrices[:, None].transpose(-1, -2)


def ijg_tables(table: tuple[tuple[int, ...], ...], qualities: torch.Tensor) -> torch.Tensor:
    """count×8×8 quantisation steps: the standard table scaled to each quality, as libjpeg's jpeg_set_quality
    (integer arithmetic, steps limited to 1–255 for baseline JPEG)."""
    base = torch.tensor(table, device=qualities.device, dtype=qualities.dtype)
    scale = torch.where(qualities < 50, torch.floor(5000 / qualities), 200 - 2 * qualities).reshape(-1, 1, 1)
    return torch.floor((base * scale + 50) / 100).clamp(1, 255)


def dct_matrix(device: torch.device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II: JPEG's block transform is this matrix on each side of a block."""
    frequency = torch.arange(8, device=device, dtype=torch.float32).reshape(-1, 1)
    position = torch.arange(8, device=device, dtype=torch.float32).reshape(1, -1)
    matrix = torch.cos((2 * position + 1) * frequency * math.pi / 16) * math.sqrt(2 / 8)
    matrix[0] /= math.sqrt(2)
    return matrix


def quantise_blocks(planes: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Planes count×C×H×W (level-shifted, H and W whole blocks) through the 8×8 DCT, each item's quantisation
    steps (count×8×8), rounding, and back."""
    count, channels, height, width = planes.shape
    dct = dct_matrix(planes.device).to(planes.dtype)
    blocks = planes.reshape(count, channels, height // 8, 8, width // 8, 8).transpose(3, 4)
    steps = steps.reshape(count, 1, 1, 1, 8, 8)
    coefficients = torch.round(dct @ blocks @ dct.T / steps) * steps
    return (dct.T @ coefficients @ dct).transpose(3, 4).reshape(count, channels, height, width)


def recompress_jpeg(images: torch.Tensor, qualities: torch.Tensor) -> torch.Tensor:
    """Each item saved as a baseline 4:2:0 JPEG at its own quality and decoded, as `imaging.shifts.jpeg` does
    with libjpeg: its loss, modelled in torch (a float DCT, not libjpeg's integer one)."""
    height, width = images.shape[-2:]
    # libjpeg fills a partial 16×16 unit (4:2:0 makes one 8×8 chroma block of it) by repeating the last pixels.
    padded = F.pad(images, (0, -width % 16, 0, -height % 16), mode="replicate") * 255
    to_ycbcr = torch.tensor(YCBCR_FROM_RGB, device=images.device, dtype=images.dtype)
    ycbcr = torch.einsum("ij,njhw->nihw", to_ycbcr, padded)
    luma = quantise_blocks(ycbcr[:, :1] - 128, ijg_tables(LUMINANCE_TABLE, qualities))
    # The encoder averages each 2×2 of chroma; the decoder ("fancy" upsampling) interpolates it back linearly
    # between sample centres, which is bilinear enlargement with centres aligned. Each plane is limited to 8
    # bits first, as the decoder does after its inverse DCT.
    chroma = quantise_blocks(F.avg_pool2d(ycbcr[:, 1:], 2), ijg_tables(CHROMINANCE_TABLE, qualities))
    chroma = F.interpolate(chroma.clamp(-128, 127), scale_factor=2, mode="bilinear", align_corners=False)
    decoded = torch.cat([luma.clamp(-128, 127) + 128, chroma], dim=1)
    to_rgb = torch.tensor(RGB_FROM_YCBCR, device=images.device, dtype=images.dtype)
    rgb = torch.einsum("ij,njhw->nihw", to_rgb, decoded)[..., :height, :width]
    return (rgb / 255).clamp(0.0, 1.0)


def degrade_optics(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Blur, a lower resolution and JPEG recompression, in that order, each for some items at a strength of
    their own, drawn as `random_camera_shift` does (images in [0, 1])."""
    count, size, device = images.shape[0], min(images.shape[-2:]), images.device

    def drawn(probability: float) -> torch.Tensor:
        return torch.rand(count, generator=generator, device=device) < probability

    blurred = drawn(BLUR_PROBABILITY)
    sigmas = (uniform(count, *BLUR_SIGMA_FRACTIONS, generator, device) * size).clamp(min=0.3)
    images = gaussian_blur(images, torch.where(blurred, sigmas, 0.0))
    shrunk = drawn(RESOLUTION_PROBABILITY)
    shorter_sides = torch.round(uniform(count, *SHORTER_SIDES, generator, device))
    images = lower_resolution(images, torch.where(shrunk, shorter_sides, float(size)))
    compressed = drawn(JPEG_PROBABILITY)
    qualities = torch.floor(uniform(count, *JPEG_QUALITIES, generator, device))
    # Every item is compressed and the draw picks: the same launches whoever is drawn, and no wait on the
    # device to count them.
    return torch.where(compressed.reshape(-1, 1, 1, 1), recompress_jpeg(images, qualities), images)


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
        mask_scale: int = 1,
    ) -> None:
        self.images = torch.as_tensor(images).to(device).permute(0, 3, 1, 2).contiguous()  # N×3×S×S uint8
        self.masks = torch.as_tensor(masks).to(device)[:, None]  # N×1×S×S uint8
        # 1: masks of 0 and 1; distillation's soft targets are stored on a larger scale (SOFT_TARGET_SCALE).
        self.mask_scale = mask_scale
        self.mean = torch.tensor(mean, device=device).reshape(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).reshape(1, 3, 1, 1)
        self.camera_shifts = camera_shifts
        self.device = device

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: list[int], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = torch.as_tensor(indices, device=self.device)
        images = self.images[chosen].float() / 255.0
        masks = self.masks[chosen].float() / self.mask_scale
        soft = self.mask_scale != 1
        if self.camera_shifts:
            # As on the CPU path: the camera first, on the picture as stored, then the turn and the colour jitter.
            # The zoom is sampled on its own rather than folded into the turn's matrix: the blur, resolution
            # and JPEG come between the two, and a zoom after them would magnify them by up to 2.2×.
            images, masks = zoom_on_lesions(images, masks, generator, soft)
            images = degrade_optics(shift_camera(images, generator), generator)
        # Outside the picture is black skin-free border, as v2.RandomAffine's default fill of 0.
        images, masks = resample(images, masks, affine_matrices(len(chosen), generator, self.device), soft=soft)
        images = jitter_colour(images, generator)
        return (images - self.mean) / self.std, masks
