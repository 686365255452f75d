"""Imaging I/O and preprocessing: PNG/NPY/DICOM readers and writers, breast mask, orientation."""
