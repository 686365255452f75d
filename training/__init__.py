"""From a folder of mammograms (DICOM, PNG, TIFF) to checkpoint bundles; procedural phantoms."""
