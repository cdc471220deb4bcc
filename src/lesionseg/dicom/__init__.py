"""The DICOM objects lesionseg writes: a Segmentation and a Parametric Map (`objects`). DICOM pictures are read in
`imaging.dicom`, and a PACS is served by `batch.dicomweb`."""
