"""Run-time support for generated kernels: the on-disk build cache (``flowcore.runtime.cache``)."""
from .cache import BuildCache, CacheBuildError, CacheEntry, cache_key, cache_root  # noqa: F401
