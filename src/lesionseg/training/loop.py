"""The training loop, shaped like torchvision's reference scripts: `train_one_epoch`, `evaluate`, a resume
state that loads and saves itself, and a DataLoader whose workers augment. Seeded, logged, resumable,
keeping the checkpoint with the best validation Jaccard (ISIC's, or as `--select-on` says); one process, or
one of several under `torchrun` sharing each batch through DistributedDataParallel. The test split is never
loaded."""

import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lesionseg.data.pairs import PairRecord, discover_pairs, read_truth
from lesionseg.data.splits import Split
from lesionseg.evaluation.metrics import SegmentationScores, mean_scores, score_masks
from lesionseg.imaging.preprocess import normalise
from lesionseg.model.checkpoint import load_checkpoint, save_checkpoint
from lesionseg.model.config import ModelConfig, get_config
from lesionseg.model.factory import create_model
from lesionseg.model.network import SegmentationNetwork
from lesionseg.model.pretrained import load_imagenet_weights
from lesionseg.model.sidecar import file_sha256
from lesionseg.training.data import AugmentedPairs, load_square_arrays
from lesionseg.training.distillation import (
    SOFT_TARGET_SCALE,
    cached_teacher_probabilities,
    soft_targets,
    teachers_record,
)
from lesionseg.training.distributed import (
    Launch,
    copy_buffers_from_first_rank,
    gather_in_order,
    gather_objects,
    joined_process_group,
    own_share,
    sum_over_ranks,
    wait_for_every_rank,
)
from lesionseg.training.gpu_augmentation import DevicePairs
from lesionseg.training.losses import bce_dice_loss
from lesionseg.training.options import TrainingOptions

# The batch --learning-rate is given for (the CPU recipe's); larger batches scale it (scaled_learning_rate).
REFERENCE_BATCH_SIZE = 16


@dataclass
class ValidationSet:
    source: str
    square_images: np.ndarray
    truths: list[np.ndarray]


def initial_state(weights_path: Path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors in float32, for fine-tuning; it must be the model being trained."""
    model, sidecar = load_checkpoint(weights_path)
    if sidecar.architecture["name"] != config.name:
        raise ValueError(f"{weights_path} holds {sidecar.architecture['name']}, not {config.name}")
    state = model.state_dict()
    return {name: tensor.float() if tensor.is_floating_point() else tensor for name, tensor in state.items()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def images_per_second(steps: float, batch_size: int, world_size: int, started: float) -> float:
    """The global batches' images a second since `started`, from every rank's steps; one decimal, so that a slow
    machine's rate does not round to 0."""
    return round(steps / world_size * batch_size / (time.time() - started), 1)


def selection_jaccard(row: dict, options: TrainingOptions) -> float:
    """The validation Jaccard `--select-on` names: one set's, or the mean of every set's."""
    if options.select_on == "mean":
        return sum(row[f"{name}_jaccard"] for name in options.sets) / len(options.sets)
    if options.select_on == "auto":
        return row.get("isic2018_jaccard", row[f"{options.sets[0]}_jaccard"])
    return row[f"{options.select_on}_jaccard"]


def load_records(options: TrainingOptions) -> tuple[Split, list[PairRecord], list[PairRecord]]:
    """(the split, training pairs, validation pairs); the test pairs are left on disk."""
    split = Split.for_training(options.held_out_fraction, options.split_seed)
    training, validation = [], []
    for set_name in options.sets:
        records = discover_pairs(options.data_root / set_name)
        if options.limit_pairs:
            records = records[: options.limit_pairs]
        set_validation = split.select(records, "validation")
        if not set_validation:  # the best checkpoint is chosen on every set's validation pairs
            raise ValueError(
                f"{set_name}: none of its {len(records)} pairs falls in the validation split (held-out fraction "
                f"{options.held_out_fraction}, seed {options.split_seed}); raise --held-out-fraction or change "
                "--split-seed"
            )
        training += split.select(records, "training")
        validation += set_validation
    return split, training, validation


def load_validation_sets(
    records: list[PairRecord], sets: tuple[str, ...], size: int, show_progress: bool = True
) -> list[ValidationSet]:
    validation_sets = []
    for source in sets:
        source_records = [r for r in records if r.source == source]
        images, _ = load_square_arrays(source_records, size, f"decoding {source} validation pairs", show_progress)
        truths = [read_truth(r.mask_path) for r in source_records]
        validation_sets.append(ValidationSet(source, images, truths))
    return validation_sets


def balanced_weights(records: list[PairRecord]) -> torch.Tensor:
    """Each source is drawn equally often, so the small ISIC set is not drowned by HAM10000."""
    counts: dict[str, int] = {}
    for record in records:
        counts[record.source] = counts.get(record.source, 0) + 1
    return torch.tensor([1.0 / counts[record.source] for record in records], dtype=torch.double)


def epoch_indices(weights: torch.Tensor, count: int, seed: int, epoch: int) -> list[int]:
    # Derived from (seed, epoch) alone, so a resumed epoch replays the same order and skips what is done.
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.multinomial(weights, count, replacement=True, generator=generator).tolist()


def make_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    warmup_steps = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Half precision on GPU, bfloat16 where the GPU has it; None (float32, as ever) on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def memory_format(device: torch.device) -> torch.memory_format:
    # Convolutions on GPU tensor cores run fastest channels-last; on CPU this keeps today's layout.
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


@torch.no_grad()
def validation_scores(
    model: SegmentationNetwork,
    config: ModelConfig,
    square_images: np.ndarray,
    truths: list[np.ndarray],
    batch_size: int,
    device: torch.device,
) -> list[SegmentationScores]:
    """Deterministic prediction at the model's size, scored at each image's own size."""
    model.eval()
    scores = []
    dtype = autocast_dtype(device)
    for start in range(0, len(square_images), batch_size):
        batch = normalise(square_images[start : start + batch_size], config.mean, config.std)
        inputs = torch.from_numpy(batch).to(device, memory_format=memory_format(device))
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(inputs)
        probabilities = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        for probability, truth in zip(probabilities, truths[start : start + batch_size], strict=True):
            height, width = truth.shape
            resized = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
            scores.append(score_masks(resized >= 0.5, truth))
    return scores


def write_logs(output_directory: Path, history: list[dict]) -> None:
    (output_directory / "log.json").write_text(json.dumps(history, indent=2) + "\n")
    with open(output_directory / "log.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


@dataclass
class TrainingState:
    """Where a run stands, saved to `state.pt` every `checkpoint_every` steps and at each epoch's end, with
    the model, optimiser, schedule and every rank's random stream, so a killed run resumes where it was."""

    epoch: int = 0
    step_in_epoch: int = 0
    best_jaccard: float = -1.0
    history: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path, model, optimizer, scheduler, launch: Launch) -> "TrainingState":
        """Restores everything from `path`; a fresh state where there is no file yet."""
        if not path.is_file():
            return cls()
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"], strict=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        # A state.pt written before training could be distributed holds one stream, rank 0's.
        rng_states = saved.get("torch_rng_by_rank") or [saved["torch_rng"]]
        # A rank the saved run did not have keeps the stream it was seeded with.
        if launch.rank < len(rng_states):
            torch.set_rng_state(rng_states[launch.rank])
        state = cls(saved["epoch"], saved["step_in_epoch"], saved["best_jaccard"], json.loads(saved["history"]))
        if launch.is_main:
            print(f"resuming {path} at epoch {state.epoch + 1}, step {state.step_in_epoch}", flush=True)
        return state

    def save(self, path: Path, model, optimizer, scheduler, launch: Launch) -> None:
        # Every rank takes part: each one's augmentation stream is saved, so a resume continues all of them.
        rng_states = gather_objects(torch.get_rng_state(), launch)
        if launch.is_main:
            saved = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng_by_rank": rng_states,
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "best_jaccard": self.best_jaccard,
                "history": json.dumps(self.history),
            }
            torch.save(saved, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)  # atomic: a kill mid-write keeps the old state
        # No rank goes on (or returns from training) before the state on disk is the current one.
        wait_for_every_rank(launch)


def device_batches(
    dataset: DevicePairs, indices: list[int], options: TrainingOptions, start_step: int, launch: Launch, epoch: int
):
    """This rank's share of each remaining batch of the epoch, augmented on the device. Each step's draws come
    from (seed, rank, epoch, step) alone, so a resumed epoch replays exactly what an uninterrupted one would."""
    generator = torch.Generator(device=dataset.device)
    for step, share in enumerate(batch_shares(indices, options, start_step, launch), start=start_step):
        generator.manual_seed(((options.seed * 1_000_003 + launch.rank) * 10_007 + epoch) * 1_000_003 + step)
        yield dataset.batch(share, generator)


def batch_shares(indices: list[int], options: TrainingOptions, start_step: int, launch: Launch) -> list[list[int]]:
    """This rank's share of each batch of the epoch from `start_step` on."""
    return [
        list(own_share(indices[step * options.batch_size : (step + 1) * options.batch_size], launch))
        for step in range(start_step, len(indices) // options.batch_size)
    ]


def scaled_learning_rate(options: TrainingOptions) -> float:
    """AdamW's square-root rule: the peak learning rate given for a batch of 16, at this batch."""
    return options.learning_rate * math.sqrt(options.batch_size / REFERENCE_BATCH_SIZE)


def epoch_loader(
    dataset: AugmentedPairs, indices: list[int], options: TrainingOptions, start_step: int, launch: Launch
) -> torch.utils.data.DataLoader:
    """This rank's share of each remaining batch of the epoch, augmented by `options.loader_workers`
    workers. The batches come from (seed, epoch) alone, so a resumed epoch skips exactly what is done; the
    workers' augmentation streams come from this rank's stream, saved in state.pt."""
    generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_shares(indices, options, start_step, launch),
        num_workers=options.loader_workers,
        generator=generator,
        persistent_workers=False,
    )


def train_one_epoch(
    trained: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    scaler: torch.amp.GradScaler,
    loader,
    state: TrainingState,
    save_state,
    options: TrainingOptions,
    launch: Launch,
) -> tuple[float, int]:
    """One pass over the loader's batches; (sum of step losses, steps) on this rank."""
    trained.train()
    device = launch.device
    dtype = autocast_dtype(device)
    loss_total, loss_count = 0.0, 0
    progress = tqdm(loader, desc=f"epoch {state.epoch + 1}/{options.epochs}", unit="step", disable=not launch.is_main)
    for images, targets in progress:
        images = images.to(device, memory_format=memory_format(device))
        targets = targets.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = trained(images)
        loss = bce_dice_loss(logits.float(), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_total += loss.item()
        loss_count += 1
        progress.set_postfix(loss=f"{loss_total / loss_count:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        state.step_in_epoch += 1
        if state.step_in_epoch % options.checkpoint_every == 0:
            save_state()
    return loss_total, loss_count


def evaluate(
    model: SegmentationNetwork,
    config: ModelConfig,
    validation_sets: list[ValidationSet],
    batch_size: int,
    launch: Launch,
) -> dict[str, float]:
    """Each set's mean validation scores, as `{set}_{metric}`. Each rank scores its share of the images;
    every rank then averages all of them in their original order, so the row (and the checkpoint it
    selects) is what one process gets."""
    copy_buffers_from_first_rank(model, launch)
    row = {}
    for validation_set in validation_sets:
        share_scores = validation_scores(
            model,
            config,
            own_share(validation_set.square_images, launch),
            own_share(validation_set.truths, launch),
            batch_size,
            launch.device,
        )
        for name, value in mean_scores(gather_in_order(share_scores, launch)).items():
            row[f"{validation_set.source}_{name}"] = round(value, 5)
    return row


def train(options: TrainingOptions) -> Path:
    """Trains, resuming from `output_directory/state.pt` if present; returns the best checkpoint's path.
    Under `torchrun` every rank runs this; rank 0 alone writes files and shows progress."""
    with joined_process_group(options.device) as launch:
        return train_in_process(options, launch)


def augments_on_device(options: TrainingOptions, launch: Launch) -> bool:
    return options.augment_on == "device" or (options.augment_on == "auto" and launch.device.type == "cuda")


def training_dataset(
    records: list[PairRecord], options: TrainingOptions, config: ModelConfig, launch: Launch
) -> AugmentedPairs | DevicePairs:
    images, masks = load_square_arrays(records, config.input_size, "decoding training pairs", launch.is_main)
    mask_scale = 1
    if options.teachers:
        probabilities = cached_teacher_probabilities(
            list(options.teachers),
            images,
            Path(options.output_directory) / "teachers.npz",
            options.batch_size,
            launch.device,
            launch.is_main,
        )
        masks, mask_scale = soft_targets(masks, probabilities, options.teacher_weight), SOFT_TARGET_SCALE
    camera_shifts = options.augmentation == "camera"
    if augments_on_device(options, launch):
        return DevicePairs(images, masks, config.mean, config.std, launch.device, camera_shifts, mask_scale)
    return AugmentedPairs(images, masks, config.mean, config.std, True, camera_shifts, mask_scale)


def initialised_model(options: TrainingOptions, config: ModelConfig) -> tuple[SegmentationNetwork, str]:
    """The model and what its weights started from: a checkpoint to fine-tune, ImageNet's encoder, or nothing."""
    model = create_model(config)
    if options.initial_weights:
        model.load_state_dict(initial_state(options.initial_weights, config), strict=True)
        sha256 = file_sha256(options.initial_weights)
        return model, f"fine-tuned from {options.initial_weights} (sha256 {sha256})"
    if options.encoder_weights == "imagenet":
        return model, load_imagenet_weights(model.encoder, config.encoder_name)
    return model, "none (random initialisation)"


def recorded(value):
    """An option's value as JSON holds it: paths, and tuples of them, as text."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [recorded(item) for item in value]
    return value


def training_record(options: TrainingOptions, encoder_weights: str, split: Split) -> dict:
    """How the checkpoint was trained, for its sidecar: command, options, starting weights, teachers, split."""
    return {
        "command": " ".join(options.command),
        "options": {name: recorded(value) for name, value in asdict(options).items()},
        "encoder_weights": encoder_weights,
        "teachers": teachers_record(list(options.teachers), options.teacher_weight) if options.teachers else None,
        "split": split.record(),
    }


def data_record(options: TrainingOptions, training_pairs: int, validation_pairs: int) -> dict:
    return {
        "sets": list(options.sets),
        "training_pairs": training_pairs,
        "validation_pairs": validation_pairs,
        "split": "sha256 of (split_seed, source, group) < held_out_fraction is held out; "
        "half of that (by a second hash) is validation, half test. A group is a lesion "
        "joined with its listed near-duplicates",
    }


def prepare_process(options: TrainingOptions, launch: Launch) -> None:
    if options.batch_size % launch.world_size:
        raise ValueError(
            f"--batch-size {options.batch_size} is the global batch; it must divide evenly"
            f" among {launch.world_size} processes"
        )
    if options.threads:
        torch.set_num_threads(options.threads)
    # Rank 0 draws what one process would; the other ranks augment their shares differently.
    # The epoch's order of pairs does not come from these streams, so it is the same on every rank.
    seed_everything(options.seed + launch.rank)


def train_in_process(options: TrainingOptions, launch: Launch) -> Path:
    prepare_process(options, launch)
    config = get_config(options.model)
    output_directory = Path(options.output_directory)
    output_directory.mkdir(parents=True, exist_ok=True)
    state_path = output_directory / "state.pt"
    best_path = output_directory / "best.safetensors"

    split, training_records, validation_records = load_records(options)
    dataset = training_dataset(training_records, options, config, launch)
    validation_sets = load_validation_sets(validation_records, options.sets, config.input_size, launch.is_main)
    model, encoder_weights = initialised_model(options, config)
    device = launch.device
    model.to(device, memory_format=memory_format(device))
    learning_rate = scaled_learning_rate(options)
    if launch.is_main:
        print(f"training on {device}, batch {options.batch_size}, peak learning rate {learning_rate:.2e}", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=options.weight_decay)
    # Only float16 can underflow gradients; with bfloat16 or float32 the scaler passes everything through.
    # Its scale re-finds itself within a few steps, so state.pt does not keep it.
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype(device) == torch.float16)
    steps_per_epoch = options.samples_per_epoch // options.batch_size
    scheduler = make_scheduler(optimizer, steps_per_epoch * options.epochs, options.warmup_fraction)
    weights = balanced_weights(training_records)

    state = TrainingState.load(state_path, model, optimizer, scheduler, launch)
    # DDP averages the gradients of the ranks' shares, which is the gradient of the mean loss over the
    # global batch; built after resuming, its start-up broadcast of rank 0's weights changes nothing.
    trained = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if launch.is_distributed
        else model
    )

    def save_state() -> None:
        state.save(state_path, model, optimizer, scheduler, launch)

    while state.epoch < options.epochs:
        indices = epoch_indices(weights, steps_per_epoch * options.batch_size, options.seed, state.epoch)
        if isinstance(dataset, DevicePairs):
            loader = device_batches(dataset, indices, options, state.step_in_epoch, launch, state.epoch)
        else:
            loader = epoch_loader(dataset, indices, options, state.step_in_epoch, launch)
        started = time.time()
        loss_total, loss_count = train_one_epoch(
            trained, optimizer, scheduler, scaler, loader, state, save_state, options, launch
        )
        # The mean over every rank's steps, each step's loss already a mean over that rank's equal share.
        loss_total, loss_count = sum_over_ranks([loss_total, loss_count], launch)
        row = {
            "epoch": state.epoch + 1,
            "train_loss": round(loss_total / max(1, loss_count), 5),
            "learning_rate": scheduler.get_last_lr()[0],
            "train_seconds": round(time.time() - started, 1),
            "images_per_second": images_per_second(loss_count, options.batch_size, launch.world_size, started),
            **evaluate(model, config, validation_sets, options.batch_size, launch),
        }
        state.history.append(row)
        if launch.is_main:
            print(json.dumps(row), flush=True)
        selection = selection_jaccard(row, options)
        if selection > state.best_jaccard:
            state.best_jaccard = selection
            if launch.is_main:
                training = {
                    **training_record(options, encoder_weights, split),
                    "data": data_record(options, len(training_records), len(validation_records)),
                    "epoch": state.epoch + 1,
                    "processes": launch.world_size,
                }
                metadata = {"training": training, "validation_during_training": row}
                save_checkpoint(model, config, best_path, metadata=metadata)
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
        if launch.is_main:
            write_logs(output_directory, state.history)
        save_state()
    return best_path
