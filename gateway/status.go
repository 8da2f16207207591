package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// StatusFromReport renders a Report as BridgeGateway status (no
// timestamps but the probes', so equal reports give equal statuses).
func StatusFromReport(r Report) nbv1.BridgeGatewayStatus {
	var st nbv1.BridgeGatewayStatus
	for _, s := range r.Segments {
		st.Segments = append(st.Segments, nbv1.GatewaySegmentStatus{BridgeConfig: s.Key.BridgeConfig, Name: s.Key.Segment,
			Role: s.Role, Programmed: s.Programmed, Error: s.Error, Phase: string(s.Phase), Egress: s.Egress, LegacySweep: legacySweepStatus(s.Sweep)})
	}
	for _, p := range r.Peers {
		ps := nbv1.GatewayPeerStatus{Address: p.Address.String(), ASN: int64(p.ASN), State: string(p.State),
			PrefixesSent: int64(p.RoutesSent), PrefixesReceived: int64(p.RoutesReceived), LastError: p.LastError,
			BFD: p.BFDState, BFDFlaps: int64(p.BFDDownTransitions)}
		if !p.Since.IsZero() {
			t := metav1.NewTime(p.Since.Truncate(1e9))
			ps.Since = &t
		}
		st.Peers = append(st.Peers, ps)
	}
	for _, p := range r.Advertised {
		st.Advertised = append(st.Advertised, p.String())
	}
	for _, e := range r.Endpoints {
		es := nbv1.GatewayEndpointStatus{Namespace: e.Namespace, Name: e.Name, BridgeConfig: e.Segment.BridgeConfig,
			Segment: e.Segment.Segment, IPs: addrStrings(e.IPs), MAC: e.MAC, FDBProgrammed: e.FDBProgrammed,
			Advertised: e.Advertised, Reachable: e.Reachable, Message: e.Message}
		if !e.LastProbe.IsZero() {
			t := metav1.NewTime(e.LastProbe.Truncate(1e9))
			es.LastProbe = &t
		}
		st.Endpoints = append(st.Endpoints, es)
	}
	for _, f := range r.Refused {
		st.Refused = append(st.Refused, nbv1.RefusedEndpoint{Namespace: f.Namespace, Endpoint: f.Endpoint, IP: f.IP.String(),
			Reason: f.Reason, MAC: f.MAC, Message: f.Message})
	}
	st.LastErrors = append(st.LastErrors, r.Problems...)
	sort.Strings(st.LastErrors)
	ready := metav1.Condition{Type: nbv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Programmed",
		Message: "every segment is programmed"}
	for _, s := range r.Segments {
		if !s.Programmed {
			ready = metav1.Condition{Type: nbv1.ConditionReady, Status: metav1.ConditionFalse, Reason: "SegmentFailed",
				Message: s.Error}
			break
		}
	}
	degraded := metav1.Condition{Type: nbv1.ConditionDegraded, Status: metav1.ConditionFalse, Reason: "Healthy", Message: "ok"}
	if r.Degraded {
		degraded = metav1.Condition{Type: nbv1.ConditionDegraded, Status: metav1.ConditionTrue, Reason: "Degraded", Message: r.DegradedReason}
	}
	st.Conditions = []metav1.Condition{ready, degraded}
	if r.LoopProbe {
		st.Conditions = append(st.Conditions, loopCondition(r.Loops))
	}
	return st
}

// loopCondition is LoopDetected: True while a recent episode is reported
// (LoopYielded when this gateway cut one of its ports).
func loopCondition(loops []LoopReport) metav1.Condition {
	if len(loops) == 0 {
		return metav1.Condition{Type: nbv1.ConditionLoopDetected, Status: metav1.ConditionFalse, Reason: nbv1.ReasonNoLoop,
			Message: "no second bridge detected"}
	}
	reason := nbv1.ReasonLoopOtherYields
	var msgs []string
	for _, l := range loops {
		msgs = append(msgs, LoopMessage(l))
		if l.Yielded {
			reason = nbv1.ReasonLoopYielded
		}
	}
	return metav1.Condition{Type: nbv1.ConditionLoopDetected, Status: metav1.ConditionTrue, Reason: reason,
		Message: strings.Join(msgs, "; ")}
}

// LoopMessage says what one loop episode was and what this gateway did
// (condition message and event text).
func LoopMessage(l LoopReport) string {
	from := "a probe of " + l.From
	if l.Own {
		from = "this gateway's own probe, back through another bridge"
	}
	msg := fmt.Sprintf("segment %s: second bridge seen on %s at %s (%s)", l.Segment, l.Port,
		l.At.UTC().Format("2006-01-02T15:04:05.000Z"), from)
	if l.Yielded {
		return msg + fmt.Sprintf(": this gateway yielded (%s), its port fenced %d ms after the detection", l.Reason, l.CutIn.Milliseconds())
	}
	return msg + fmt.Sprintf(": this gateway keeps bridging (%s), the other bridge yields", l.Reason)
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// LogStatus is the standalone sink: the report goes to the log when it
// changes.
type LogStatus struct {
	Log  *zap.Logger
	last *nbv1.BridgeGatewayStatus
}

// Publish implements StatusSink.
func (l *LogStatus) Publish(_ context.Context, r Report) error {
	st := StatusFromReport(r)
	if l.last != nil && equality.Semantic.DeepEqual(*l.last, st) {
		return nil
	}
	l.last = &st
	l.Log.Info("status", zap.String("event", "statusChanged"), zap.Strings("advertised", st.Advertised),
		zap.Int("segments", len(st.Segments)), zap.Int("refused", len(st.Refused)), zap.Strings("problems", st.LastErrors))
	return nil
}
