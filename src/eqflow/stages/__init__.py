"""A run's stages, in the order :func:`eqflow.pipeline.train` calls them: :mod:`.data`,
:mod:`.score` (its cache key in :mod:`.score_cache`), the flow built by :mod:`.building` and
fitted and measured by :mod:`.flow`."""
