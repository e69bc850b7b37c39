package mesh

import "github.com/prometheus/client_golang/prometheus"

// Collectors are the mesh's metrics, for the process registry (Module
// registers them on the edge's): with Consul, each exposed service's
// instances, the watches' health and errors, and the service grace; with an
// mTLS identity, when its certificate expires.
func (m *Mesh) Collectors() []prometheus.Collector {
	var out []prometheus.Collector
	if m.Catalog != nil {
		out = append(out,
			instancesCollector{m.Catalog},
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "portico_consul_watch_healthy",
				Help: "1 when every Consul watch answers; 0 while Portico serves its last known state (degraded).",
			}, func() float64 {
				if m.ConsulStatus().Healthy {
					return 1
				}
				return 0
			}),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "portico_consul_watch_errors_total",
				Help: "Failed Consul queries (catalog, health, Connect CA).",
			}, func() float64 { return float64(m.ConsulStatus().Errors) }),
		)
		out = append(out, m.Catalog.Collectors()...)
	}
	if m.Identity != nil {
		out = append(out, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "portico_mesh_certificate_expiry_timestamp_seconds",
			Help: "When Portico's mesh leaf certificate expires (Unix time); 0 before it is loaded.",
		}, func() float64 {
			if id := m.Identity.Identity(); id != nil {
				return float64(id.NotAfter().Unix())
			}
			return 0
		}))
	}
	return out
}

// instancesCollector reports each exposed service's passing instances by
// state: healthy (in the balancer) or ejected (outlier detection).
type instancesCollector struct{ c *Catalog }

var instancesDesc = prometheus.NewDesc("portico_upstream_instances",
	"Passing Consul instances of each exposed service, by state: healthy (receiving calls) or ejected (outlier detection).",
	[]string{"service", "state"}, nil)

func (instancesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- instancesDesc }

func (ic instancesCollector) Collect(ch chan<- prometheus.Metric) {
	for _, svc := range ic.c.Services() {
		n, ejected := ic.c.Instances(svc), len(ic.c.Ejected(svc))
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(max(n-ejected, 0)), svc, "healthy")
		ch <- prometheus.MustNewConstMetric(instancesDesc, prometheus.GaugeValue, float64(ejected), svc, "ejected")
	}
}
