package peerlink

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descSent       = prometheus.NewDesc("netbridge_peerlink_sent_total", "Heartbeats handed to the kernel.", nil, nil)
	descSendErrors = prometheus.NewDesc("netbridge_peerlink_send_errors_total", "Heartbeats the kernel refused.", nil, nil)
	descAccepted   = prometheus.NewDesc("netbridge_peerlink_accepted_total", "Heartbeats that updated the view.", nil, nil)
	descDropped    = prometheus.NewDesc("netbridge_peerlink_dropped_total", "Packets and messages refused, by reason (docs/ha.md).", []string{"reason"}, nil)
	descAlive      = prometheus.NewDesc("netbridge_peerlink_peer_alive", "1 when a heartbeat from the peer was accepted within DeadAfter.", []string{"peer"}, nil)
	descAcksMe     = prometheus.NewDesc("netbridge_peerlink_peer_acks_me", "1 when the peer acknowledges a heartbeat of ours sent within DeadAfter.", []string{"peer"}, nil)
)

// Collector exposes l's Stats and per-peer view as Prometheus metrics.
func Collector(l *Link) prometheus.Collector { return collector{l} }

type collector struct{ l *Link }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSent, descSendErrors, descAccepted, descDropped, descAlive, descAcksMe} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.Stats()
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(s.Sent))
	ch <- prometheus.MustNewConstMetric(descSendErrors, prometheus.CounterValue, float64(s.SendErrors))
	ch <- prometheus.MustNewConstMetric(descAccepted, prometheus.CounterValue, float64(s.Accepted))
	reasons := make([]string, 0, len(s.Dropped))
	for r := range s.Dropped {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(s.Dropped[r]), r)
	}
	for name, v := range c.l.Peers() {
		ch <- prometheus.MustNewConstMetric(descAlive, prometheus.GaugeValue, b2f(v.Alive), name)
		ch <- prometheus.MustNewConstMetric(descAcksMe, prometheus.GaugeValue, b2f(v.AcksMe), name)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
