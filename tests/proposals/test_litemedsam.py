"""LiteMedSAM on ONNX Runtime: the shipped graphs against the PyTorch network they were exported from, their
sha256 check, the box's checks, and the kept embeddings; on real dermoscopy."""

import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from lesionseg.data.pairs import read_image, read_truth
from lesionseg.model.sidecar import CheckpointError
from lesionseg.proposals.export import PromptAndMaskDecoder, load_litemedsam
from lesionseg.proposals.litemedsam import (
    PROPOSER_DIRECTORY,
    BoxProposer,
    InvalidBox,
    box_around,
    checked_box,
    encoder_input,
)


@pytest.fixture(scope="module")
def proposer() -> BoxProposer:
    return BoxProposer()


@pytest.fixture(scope="module")
def lesion(isic_validation_pairs):
    record = isic_validation_pairs[0]
    return read_image(record.image_path), read_truth(record.mask_path)


def jaccard(first: np.ndarray, second: np.ndarray) -> float:
    return (first & second).sum() / (first | second).sum()


@pytest.mark.slow  # runs the 1.6-second image encoder on real photos
def test_the_shipped_graphs_compute_what_the_pytorch_network_does(proposer, lesion):
    image, truth = lesion
    network, _ = load_litemedsam()
    box = torch.tensor([box_around(truth)], dtype=torch.float32) * 256 / max(image.shape[:2])
    with torch.no_grad():
        embedding = network.image_encoder(torch.from_numpy(encoder_input(image)))
        logits, predicted_iou = PromptAndMaskDecoder(network)(embedding, box)
    encoder, decoder = proposer.sessions()
    (ours,) = encoder.run(None, {"image": encoder_input(image)})
    our_logits, our_iou = decoder.run(None, {"image_embedding": embedding.numpy(), "box": box.numpy()})
    # Float32 on two runtimes: the same sums in another order. The embedding's values are of order 1 and the
    # logits of order 10, so differences beyond a few units in the 5th digit would be a wrong graph, not rounding.
    assert np.abs(ours - embedding.numpy()).max() < 1e-3
    assert np.abs(our_logits - logits.numpy()).max() < 1e-2
    assert our_iou.item() == pytest.approx(predicted_iou.item(), abs=1e-4)


@pytest.mark.slow  # runs the 1.6-second image encoder on real photos
def test_a_box_around_the_lesion_gets_the_lesion(proposer, lesion):
    image, truth = lesion
    proposal = proposer.propose(proposer.embed(image), box_around(truth))
    assert proposal.mask.shape == truth.shape and proposal.probability.dtype == np.float32
    # The box frames the lesion, so the proposal lies inside it and covers most of what the expert drew: on
    # the test split its Jaccard averages 0.8-0.9 (README); under 0.65 it would fail the ISIC challenge's line.
    x0, y0, x1, y1 = box_around(truth)
    assert proposal.mask[y0:y1, x0:x1].sum() >= 0.95 * proposal.mask.sum()
    assert jaccard(proposal.mask, truth) >= 0.65
    assert 0 < proposal.predicted_iou <= 1


def test_boxes_are_clipped_to_the_image_and_refused_where_nothing_is_left():
    assert checked_box([-5, -5, 50, 40], (30, 100)) == (0.0, 0.0, 50.0, 30.0)
    for box in ([10, 10, 5, 20], [200, 0, 300, 10], [0, 0, float("nan"), 10], [1, 2, 3]):
        with pytest.raises(InvalidBox, match="box"):
            checked_box(box, (30, 100))
    assert box_around(np.zeros((30, 100), bool)) == (0, 0, 100, 30)


@pytest.mark.slow  # runs the 1.6-second image encoder on real photos
def test_an_embedding_is_kept_for_the_next_box_on_the_same_image(lesion):
    image, truth = lesion
    proposer = BoxProposer()
    first = proposer.kept_embedding(image)
    again = proposer.kept_embedding(image.copy())
    assert not first.kept and again.kept and again.embedding is first.embedding
    other = proposer.kept_embedding(np.ascontiguousarray(image[:, ::-1]))
    assert not other.kept


def test_a_graph_that_does_not_match_its_sidecar_is_refused(tmp_path, lesion):
    for path in PROPOSER_DIRECTORY.glob("litemedsam.*"):
        shutil.copy(path, tmp_path / path.name)
    with open(tmp_path / "litemedsam.decoder.onnx", "r+b") as graph:
        graph.seek(-100, 2)
        graph.write(b"\x00" * 8)
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        BoxProposer(tmp_path).embed(lesion[0])


@pytest.mark.slow  # runs the 1.6-second image encoder on real photos
def test_a_proposal_for_a_large_photo_is_made_a_band_at_a_time_and_agrees_with_the_small_one(proposer, lesion):
    """Masks for a 12-megapixel photo come from the same 256-pixel logits, resized band by band (a whole
    float map would be 48 MB here, 256 MB at the 64-megapixel limit)."""
    image, truth = lesion
    small = proposer.embed(image)
    height, width = image.shape[:2]
    scale = 4000 / width
    large_size = (round(height * scale), 4000)
    large = proposer.propose(replace(small, image_size=large_size), [side * scale for side in box_around(truth)])
    assert large.mask.shape == large_size and large.mask.dtype == bool
    reference = proposer.propose(small, box_around(truth)).mask
    shrunk = cv2.resize(large.mask.view(np.uint8), (width, height), interpolation=cv2.INTER_AREA) > 0.5
    # The same logits resized to two sizes: they differ only along the outline, a pixel or so wide.
    assert (shrunk != reference).mean() < 0.01
