"""The training loop: seeded, logged, resumable, keeping the checkpoint with the best ISIC Jaccard."""

import csv
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from lesionseg.evaluation.metrics import mean_scores, score_masks, truth_from_mask_image
from lesionseg.imaging.preprocess import normalise
from lesionseg.model.checkpoint import save_checkpoint
from lesionseg.model.config import ModelConfig, get_config
from lesionseg.model.network import LesionSegmenter
from lesionseg.model.pretrained import load_imagenet_weights
from lesionseg.model.registry import create_model
from lesionseg.training.data import (
    AugmentedPairs,
    PairRecord,
    discover_pairs,
    load_square_arrays,
    read_mask,
    split_pairs,
)
from lesionseg.training.losses import bce_dice_loss
from lesionseg.training.options import TrainingOptions

# Model selection and the shipped bar are both on ISIC pairs; other sets are reported alongside.
SELECTION_SET = "isic2018"


@dataclass
class ValidationSet:
    source: str
    records: list[PairRecord]
    square_images: np.ndarray
    truths: list[np.ndarray]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_records(options: TrainingOptions) -> tuple[list[PairRecord], list[PairRecord]]:
    training, validation = [], []
    for set_name in options.sets:
        records = discover_pairs(options.data_root / set_name)
        if options.limit_pairs:
            records = records[: options.limit_pairs]
        set_training, set_validation = split_pairs(records, options.validation_fraction, options.split_seed)
        training += set_training
        validation += set_validation
    return training, validation


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


@torch.no_grad()
def validate(
    model: LesionSegmenter, config: ModelConfig, validation_set: ValidationSet, batch_size: int
) -> dict[str, float]:
    """Deterministic prediction at the model's size, scored at each image's own size."""
    model.eval()
    scores = []
    for start in range(0, len(validation_set.records), batch_size):
        batch = normalise(validation_set.square_images[start : start + batch_size], config.mean, config.std)
        probabilities = torch.sigmoid(model(torch.from_numpy(batch)))[:, 0].numpy()
        for probability, truth in zip(probabilities, validation_set.truths[start : start + batch_size], strict=True):
            height, width = truth.shape
            resized = cv2.resize(probability, (width, height), interpolation=cv2.INTER_LINEAR)
            scores.append(score_masks(resized >= 0.5, truth))
    return mean_scores(scores)


def write_logs(output_directory: Path, history: list[dict]) -> None:
    (output_directory / "log.json").write_text(json.dumps(history, indent=2) + "\n")
    with open(output_directory / "log.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def train(options: TrainingOptions) -> Path:
    """Trains, resuming from `output_directory/state.pt` if present; returns the best checkpoint's path."""
    if options.threads:
        torch.set_num_threads(options.threads)
    seed_everything(options.seed)
    config = get_config(options.model)
    output_directory = Path(options.output_directory)
    output_directory.mkdir(parents=True, exist_ok=True)
    state_path = output_directory / "state.pt"
    best_path = output_directory / "best.safetensors"

    training_records, validation_records = load_records(options)
    training_images, training_masks = load_square_arrays(training_records, config.input_size, "decoding training pairs")
    dataset = AugmentedPairs(training_images, training_masks, augment=True)
    validation_sets = []
    for source in options.sets:
        records = [r for r in validation_records if r.source == source]
        images, _ = load_square_arrays(records, config.input_size, f"decoding {source} validation pairs")
        truths = [truth_from_mask_image(read_mask(r.mask_path)) for r in records]
        validation_sets.append(ValidationSet(source, records, images, truths))

    model = create_model(config)
    encoder_weights = "none (random initialisation)"
    if options.encoder_weights == "imagenet":
        encoder_weights = load_imagenet_weights(model.encoder, config.encoder_name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    steps_per_epoch = options.samples_per_epoch // options.batch_size
    scheduler = make_scheduler(optimizer, steps_per_epoch * options.epochs, options.warmup_fraction)
    weights = balanced_weights(training_records)

    epoch, step_in_epoch, best_jaccard, history = 0, 0, -1.0, []
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
        best_jaccard, history = state["best_jaccard"], json.loads(state["history"])
        print(f"resuming {state_path} at epoch {epoch + 1}, step {step_in_epoch}", flush=True)

    def save_state() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "best_jaccard": best_jaccard,
            "history": json.dumps(history),
        }
        torch.save(state, state_path.with_suffix(".tmp"))
        state_path.with_suffix(".tmp").replace(state_path)  # atomic: a kill mid-write keeps the old state

    while epoch < options.epochs:
        model.train()
        indices = epoch_indices(weights, steps_per_epoch * options.batch_size, options.seed, epoch)
        started = time.time()
        loss_total, loss_count = 0.0, 0
        progress = tqdm(range(step_in_epoch, steps_per_epoch), desc=f"epoch {epoch + 1}/{options.epochs}", unit="step")
        for step in progress:
            batch_indices = indices[step * options.batch_size : (step + 1) * options.batch_size]
            pairs = [dataset[index] for index in batch_indices]
            images = torch.from_numpy(
                normalise(np.stack([image.numpy() for image, _ in pairs]), config.mean, config.std)
            )
            targets = torch.stack([mask for _, mask in pairs])[:, None]
            loss = bce_dice_loss(model(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_total += loss.item()
            loss_count += 1
            progress.set_postfix(loss=f"{loss_total / loss_count:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            step_in_epoch = step + 1
            if step_in_epoch % options.checkpoint_every == 0:
                save_state()

        row = {
            "epoch": epoch + 1,
            "train_loss": round(loss_total / max(1, loss_count), 5),
            "learning_rate": scheduler.get_last_lr()[0],
            "train_seconds": round(time.time() - started, 1),
        }
        for validation_set in validation_sets:
            for name, value in validate(model, config, validation_set, options.batch_size).items():
                row[f"{validation_set.source}_{name}"] = round(value, 5)
        history.append(row)
        print(json.dumps(row), flush=True)
        selection = row.get(f"{SELECTION_SET}_jaccard", row[f"{options.sets[0]}_jaccard"])
        if selection > best_jaccard:
            best_jaccard = selection
            save_checkpoint(
                model,
                config,
                best_path,
                metadata={
                    "training": {
                        "command": " ".join(options.command),
                        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
                        "encoder_weights": encoder_weights,
                        "data": {
                            "sets": list(options.sets),
                            "training_pairs": len(training_records),
                            "validation_pairs": len(validation_records),
                            "split": "sha256 of (split_seed, source, lesion_id or image id)"
                            f" < {options.validation_fraction}",
                        },
                        "epoch": epoch + 1,
                    },
                    "validation_during_training": row,
                },
            )
        epoch, step_in_epoch = epoch + 1, 0
        write_logs(output_directory, history)
        save_state()
    return best_path
