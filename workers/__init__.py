"""Queue side: the RQ worker that holds loaded bundles, job functions, result store, progress and cancel."""
