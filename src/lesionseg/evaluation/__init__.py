"""ISIC segmentation metrics and evaluation reports."""
