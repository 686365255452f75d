"""The domain core: networks, samplers, geometry, pipelines, imaging I/O, bundles, metrics.

Free of web and queue code, so a researcher can ``from models.mambo import ...`` in a notebook.
"""
