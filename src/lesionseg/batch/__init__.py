"""Segmenting an archive: a folder or manifest in, masks, uncertainty maps and a results table out."""
