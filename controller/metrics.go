package controller

import (
	"github.com/prometheus/client_golang/prometheus"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// metrics are the controller's own series, registered on the registerer
// given to NewManager (controller-runtime's registry in the binary, a
// private one in tests that run several managers in one process).
type metrics struct {
	endpoints       *prometheus.GaugeVec
	conflicts       *prometheus.GaugeVec
	configReady     *prometheus.GaugeVec
	reconcileErrors *prometheus.CounterVec
	writes          *prometheus.CounterVec
	autoCutovers    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "netbridge_controller_endpoints",
			Help: "BridgeEndpoints by segment and cutover state.",
		}, []string{"bridgeconfig", "segment", "state"}),
		conflicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "netbridge_controller_endpoint_conflicts",
			Help: "BridgeEndpoints with a Conflict or Rejected condition, by segment.",
		}, []string{"bridgeconfig", "segment"}),
		configReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "netbridge_controller_bridgeconfig_ready",
			Help: "1 when the BridgeConfig passed the cross-object checks, else 0.",
		}, []string{"bridgeconfig"}),
		reconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netbridge_controller_reconcile_errors_total",
			Help: "Reconciles that failed, by controller.",
		}, []string{"controller"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netbridge_controller_writes_total",
			Help: "API writes issued by the reconcilers, by operation.",
		}, []string{"op"}),
		autoCutovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "netbridge_controller_auto_cutovers_total",
			Help: "Automatic cutover steps (cutoverPolicy AfterMigration) by segment and result: activated, verified, rolled_back.",
		}, []string{"bridgeconfig", "segment", "result"}),
	}
	for _, c := range []prometheus.Collector{m.endpoints, m.conflicts, m.configReady, m.reconcileErrors, m.writes, m.autoCutovers} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) setSegment(k SegmentKey, c nbv1.EndpointCounts) {
	m.endpoints.WithLabelValues(k.BridgeConfig, k.Segment, string(nbv1.StateStaged)).Set(float64(c.Staged))
	m.endpoints.WithLabelValues(k.BridgeConfig, k.Segment, string(nbv1.StateActive)).Set(float64(c.Active))
	m.endpoints.WithLabelValues(k.BridgeConfig, k.Segment, string(nbv1.StateWithdrawn)).Set(float64(c.Withdrawn))
	m.conflicts.WithLabelValues(k.BridgeConfig, k.Segment).Set(float64(c.Refused))
}

func (m *metrics) deleteSegment(k SegmentKey) {
	for _, s := range []nbv1.CutoverState{nbv1.StateStaged, nbv1.StateActive, nbv1.StateWithdrawn} {
		m.endpoints.DeleteLabelValues(k.BridgeConfig, k.Segment, string(s))
	}
	m.conflicts.DeleteLabelValues(k.BridgeConfig, k.Segment)
}

// autoCutoverResult is the result label of an automatic cutover step.
func autoCutoverResult(s nbv1.AutoCutoverState) string {
	switch s {
	case nbv1.AutoActivated:
		return "activated"
	case nbv1.AutoVerified:
		return "verified"
	case nbv1.AutoRolledBack:
		return "rolled_back"
	}
	return ""
}

// countAutoCutover counts one step of a VMI's automatic cutover once per
// AfterMigration segment the VMI has an endpoint on.
func (m *metrics) countAutoCutover(segments []SegmentKey, s nbv1.AutoCutoverState) {
	result := autoCutoverResult(s)
	if result == "" {
		return
	}
	for _, k := range segments {
		m.autoCutovers.WithLabelValues(k.BridgeConfig, k.Segment, result).Inc()
	}
}

// newAPIReachableGauge is Run's view of the API server: 1 while it
// answers, 0 while it is unreachable (down or hung) or not yet reached.
func newAPIReachableGauge(reg prometheus.Registerer) (prometheus.Gauge, error) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netbridge_controller_api_reachable",
		Help: "1 while the API server answers the controller's /readyz probe, else 0.",
	})
	if err := reg.Register(g); err != nil {
		return nil, err
	}
	return g, nil
}
