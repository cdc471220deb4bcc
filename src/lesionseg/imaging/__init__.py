"""Images in and out: decoding and validating uploads, model-sized tensors, rendered results."""
