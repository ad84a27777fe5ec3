"""Cache backends of opsdesk.

`redis.ResilientRedisCache` is django-redis behind a circuit breaker: Redis down costs one failed
call per process, then nothing until the next probe. `failover.FailoverCache` wraps a primary cache
alias and falls back to a per-process in-memory cache while the primary is unavailable (used by the
rate limiter, which must keep counting during an outage).
"""
