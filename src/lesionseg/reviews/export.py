"""Reviewed cases back into training: the layout `lesionseg train --data-root` reads.

    OUT/images/ID.jpg                 the image, upright (EXIF applied), JPEG quality 95
    OUT/masks/ID_segmentation.png     the mask a person approved: the model's if accepted, theirs if corrected
    OUT/manifest.csv                  who reviewed what, with which model

Then `lesionseg train --data-root PARENT_OF_OUT --sets NAME_OF_OUT`.
"""

import csv
import io
from pathlib import Path

from PIL import Image

from lesionseg.config import Settings
from lesionseg.imaging.decode import decode_upload
from lesionseg.imaging.render import encode_mask_png
from lesionseg.reviews.cases import CaseStore

MANIFEST_FIELDS = [
    "id",
    "status",
    "reviewer",
    "reviewed_at",
    "uploaded_at",
    "image_sha256",
    "width",
    "height",
    "model_name",
    "model_version",
    "model_sha256",
    "uncertainty_score",
    "out_of_distribution",
]


def export_reviews(store: CaseStore, output: Path, settings: Settings | None = None) -> int:
    """Writes every accepted or corrected case; returns how many."""
    settings = settings or Settings()
    output = Path(output)
    (output / "images").mkdir(parents=True, exist_ok=True)
    (output / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for case, data, mask in store.reviewed():
        decoded = decode_upload(data, settings.max_pixels, settings.min_side, None)
        buffer = io.BytesIO()
        Image.fromarray(decoded.rgb).save(buffer, format="JPEG", quality=95)
        (output / "images" / f"{case['id']}.jpg").write_bytes(buffer.getvalue())
        (output / "masks" / f"{case['id']}_segmentation.png").write_bytes(encode_mask_png(mask))
        review, model = case["review"], case["model"]
        rows.append(
            {
                "id": case["id"],
                "status": review["status"],
                "reviewer": review["reviewer"] or "",
                "reviewed_at": review["updated_at"],
                "uploaded_at": case["created_at"],
                "image_sha256": case["image"]["sha256"],
                "width": case["image"]["width"],
                "height": case["image"]["height"],
                "model_name": model["name"],
                "model_version": model["version"],
                "model_sha256": model["sha256"],
                "uncertainty_score": case["uncertainty_score"],
                "out_of_distribution": case["out_of_distribution"],
            }
        )
    with open(output / "manifest.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
