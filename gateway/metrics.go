package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/bgp"
)

// Metrics are the gateway's Prometheus metrics (names documented in
// docs/operations.md).
type Metrics struct {
	segmentsProgrammed prometheus.Gauge
	segmentError       *prometheus.GaugeVec
	failedSegments     map[string]bool
	endpoints          *prometheus.GaugeVec
	sessionUp          *prometheus.GaugeVec
	prefixes           *prometheus.GaugeVec
	reconcileDuration  prometheus.Histogram
	reconcileErrors    prometheus.Counter
	leaseTransitions   *prometheus.CounterVec
	duplicates         prometheus.Counter
	degraded           prometheus.Gauge
	bfdUp              *prometheus.GaugeVec
	bfdFlaps           *prometheus.CounterVec
	sessionResets      *prometheus.CounterVec
	loopsDetected      *prometheus.CounterVec
	seenDuplicates     map[string]bool
	peers              map[string]bool
	// lastCounts: the speaker's cumulative counters per peer at the last
	// report, so the Prometheus counters grow by the difference.
	lastCounts map[string][2]uint64
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		segmentsProgrammed: prometheus.NewGauge(prometheus.GaugeOpts{Name: "netbridge_gateway_segments_programmed",
			Help: "Segments whose kernel objects match the desired state."}),
		segmentError: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "netbridge_gateway_segment_error",
			Help: "1 while the segment is refused or could not be programmed (the error is in the log and the status)."}, []string{"segment"}),
		failedSegments: map[string]bool{},
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "netbridge_gateway_endpoints",
			Help: "Endpoints known to this gateway by state (advertised, refused, pending)."}, []string{"state"}),
		sessionUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "netbridge_gateway_bgp_session_up",
			Help: "1 when the BGP session with the peer is Established."}, []string{"peer"}),
		prefixes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "netbridge_gateway_bgp_prefixes_advertised",
			Help: "Prefixes sent to the peer."}, []string{"peer"}),
		reconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "netbridge_gateway_reconcile_duration_seconds",
			Help: "Duration of one reconcile pass.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "netbridge_gateway_reconcile_errors_total",
			Help: "Reconcile passes that failed to apply something."}),
		leaseTransitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netbridge_gateway_lease_transitions_total",
			Help: "Times this gateway gained or lost a segment's lease."}, []string{"segment"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "netbridge_gateway_duplicate_address_total",
			Help: "Activations blocked because another MAC answered for the IP on the VLAN side."}),
		degraded: prometheus.NewGauge(prometheus.GaugeOpts{Name: "netbridge_gateway_degraded",
			Help: "1 while the agent is degraded: API server unreachable (fail static) or a change could not be applied."}),
		bfdUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "netbridge_gateway_bfd_up",
			Help: "1 while the BFD session with the peer is Up (absent when BFD is off)."}, []string{"peer"}),
		bfdFlaps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netbridge_gateway_bfd_flaps_total",
			Help: "Times the BFD session with the peer left Up."}, []string{"peer"}),
		sessionResets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netbridge_gateway_bgp_session_resets_total",
			Help: "Times the BGP session with the peer left Established."}, []string{"peer"}),
		loopsDetected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "netbridge_gateway_loops_detected_total",
			Help: "Second bridges detected on the segment by the loop probe (episodes, whichever side yielded)."}, []string{"segment"}),
		seenDuplicates: map[string]bool{},
		lastCounts:     map[string][2]uint64{},
	}
	if reg != nil {
		reg.MustRegister(m.segmentsProgrammed, m.segmentError, m.endpoints, m.sessionUp, m.prefixes, m.reconcileDuration,
			m.reconcileErrors, m.leaseTransitions, m.duplicates, m.degraded, m.bfdUp, m.bfdFlaps, m.sessionResets, m.loopsDetected)
	}
	return m
}

func (m *Metrics) observeReconcile(d time.Duration, err error) {
	if m == nil {
		return
	}
	m.reconcileDuration.Observe(d.Seconds())
	if err != nil {
		m.reconcileErrors.Inc()
	}
}

// LoopDetected counts a loop episode of a segment.
func (m *Metrics) LoopDetected(segment string) {
	if m == nil {
		return
	}
	m.loopsDetected.WithLabelValues(segment).Inc()
}

// LeaseTransition counts a leadership change of a segment.
func (m *Metrics) LeaseTransition(segment string) {
	if m == nil {
		return
	}
	m.leaseTransitions.WithLabelValues(segment).Inc()
}

func (m *Metrics) observeReport(r Report) {
	if m == nil {
		return
	}
	n := 0
	for _, s := range r.Segments {
		if s.Programmed {
			n++
		}
	}
	m.segmentsProgrammed.Set(float64(n))
	failed := map[string]bool{}
	for _, s := range r.Segments {
		if !s.Programmed {
			failed[s.Key.String()] = true
			m.segmentError.WithLabelValues(s.Key.String()).Set(1)
		}
	}
	for k := range m.failedSegments {
		if !failed[k] {
			m.segmentError.DeleteLabelValues(k)
		}
	}
	m.failedSegments = failed
	if r.Degraded {
		m.degraded.Set(1)
	} else {
		m.degraded.Set(0)
	}
	adv, pending := 0, 0
	for _, e := range r.Endpoints {
		if e.Advertised {
			adv++
		} else {
			pending++
		}
	}
	m.endpoints.WithLabelValues("advertised").Set(float64(adv))
	m.endpoints.WithLabelValues("pending").Set(float64(pending - refusedEndpoints(r)))
	m.endpoints.WithLabelValues("refused").Set(float64(len(r.Refused)))
	// A duplicate is counted once while it lasts: the set holds only the
	// duplicates of this report, so it is bounded by the refused IPs.
	dups := map[string]bool{}
	for _, f := range r.Refused {
		key := f.IP.String() + "/" + f.MAC
		if f.Reason == string(nbv1.ReasonDuplicateAddress) {
			dups[key] = true
			if !m.seenDuplicates[key] {
				m.duplicates.Inc()
			}
		}
	}
	m.seenDuplicates = dups
	// Session state comes from the speaker's events (PeerEvent); the
	// report only prunes peers that are gone and refreshes the counters.
	peers := map[string]bool{}
	for _, p := range r.Peers {
		a := p.Address.String()
		peers[a] = true
		m.prefixes.WithLabelValues(a).Set(float64(p.RoutesSent))
		if !m.peers[a] {
			m.sessionUp.WithLabelValues(a).Set(boolGauge(p.State == bgp.StateEstablished))
		}
		if p.BFDState != "" {
			m.bfdUp.WithLabelValues(a).Set(boolGauge(p.BFDState == bgp.BFDUp))
		} else {
			m.bfdUp.DeleteLabelValues(a)
		}
		last := m.lastCounts[a]
		if p.BFDDownTransitions > last[0] {
			m.bfdFlaps.WithLabelValues(a).Add(float64(p.BFDDownTransitions - last[0]))
		}
		if p.SessionResets > last[1] {
			m.sessionResets.WithLabelValues(a).Add(float64(p.SessionResets - last[1]))
		}
		m.lastCounts[a] = [2]uint64{p.BFDDownTransitions, p.SessionResets}
	}
	for a := range m.peers {
		if !peers[a] {
			m.sessionUp.DeleteLabelValues(a)
			m.prefixes.DeleteLabelValues(a)
			m.bfdUp.DeleteLabelValues(a)
			delete(m.lastCounts, a)
		}
	}
	m.peers = peers
}

// PeerEvent follows a BGP session state change as it happens.
func (m *Metrics) PeerEvent(ev bgp.PeerEvent) {
	if m == nil {
		return
	}
	if ev.BFD {
		if ev.BFDState != "" {
			m.bfdUp.WithLabelValues(ev.Address.String()).Set(boolGauge(ev.BFDState == bgp.BFDUp))
		}
		return
	}
	m.sessionUp.WithLabelValues(ev.Address.String()).Set(boolGauge(ev.State == bgp.StateEstablished))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// refusedEndpoints counts the endpoints with a refused IP and nothing
// advertised: they are refused, not pending.
func refusedEndpoints(r Report) int {
	refused := map[string]bool{}
	for _, f := range r.Refused {
		refused[f.Namespace+"/"+f.Endpoint] = true
	}
	n := 0
	for _, e := range r.Endpoints {
		if !e.Advertised && refused[e.Namespace+"/"+e.Name] {
			n++
		}
	}
	return n
}
