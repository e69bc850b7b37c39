package policies

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the policy stages' counters.
type Metrics struct {
	storeErrors *prometheus.CounterVec
	rateLimited prometheus.Counter
	cache       *prometheus.CounterVec
	retries     *prometheus.CounterVec
	denied      *prometheus.CounterVec
}

// NewMetrics registers the policy metrics on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_policy_store_errors_total",
			Help: "Failed calls to the shared store (Redis), by user: rate_limit or cache. Each was answered by the configured failure mode.",
		}, []string{"store"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portico_rate_limited_total",
			Help: "Requests rejected with 429 by a rate limit.",
		}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_cache_requests_total",
			Help: "Cacheable requests by result: hit, stale, miss, bypass.",
		}, []string{"result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_upstream_retries_total",
			Help: "Upstream retries: retried, or budget_exhausted when the retry budget refused one.",
		}, []string{"outcome"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_auth_denied_total",
			Help: "Requests refused by authentication (401) or authorization (403), by reason.",
		}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.storeErrors, m.rateLimited, m.cache, m.retries, m.denied)
	}
	return m
}
