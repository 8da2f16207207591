package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"sort"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// KubeStatus writes the agent's own BridgeGateway (one writer) and emits
// events for activations, refusals and failovers. It writes only when the
// status changed.
type KubeStatus struct {
	client   client.Client
	recorder record.EventRecorder
	nodeName string
	role     Role
	log      *zap.Logger

	last    *nbv1.BridgeGatewayStatus
	prev    Report
	hasPrev bool
}

// NewKubeStatus returns a sink writing BridgeGateway nodeName.
func NewKubeStatus(c client.Client, rec record.EventRecorder, nodeName string, role Role, log *zap.Logger) *KubeStatus {
	return &KubeStatus{client: c, recorder: rec, nodeName: nodeName, role: role, log: log}
}

// Publish implements StatusSink.
func (k *KubeStatus) Publish(ctx context.Context, r Report) error {
	st := StatusFromReport(r)
	k.events(r)
	if k.last != nil && equality.Semantic.DeepEqual(*k.last, st) {
		return nil
	}
	var gw nbv1.BridgeGateway
	err := k.client.Get(ctx, client.ObjectKey{Name: k.nodeName}, &gw)
	if apierrors.IsNotFound(err) {
		gw = nbv1.BridgeGateway{ObjectMeta: metav1.ObjectMeta{Name: k.nodeName,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "netbridge-gateway"}},
			Spec: nbv1.BridgeGatewaySpec{NodeName: k.nodeName, Role: nbv1.GatewayRole(k.role)}}
		if err := k.client.Create(ctx, &gw); err != nil {
			return fmt.Errorf("create bridgegateway %s: %w", k.nodeName, err)
		}
	} else if err != nil {
		return fmt.Errorf("get bridgegateway %s: %w", k.nodeName, err)
	}
	// Conditions keep their transition times when their status holds.
	conds := gw.Status.Conditions
	for _, c := range st.Conditions {
		meta.SetStatusCondition(&conds, c)
	}
	st.Conditions = conds
	cmp := gw.Status
	cmp.ObservedAt = nil
	if equality.Semantic.DeepEqual(cmp, st) {
		k.last = &st
		return nil
	}
	now := metav1.Now()
	gw.Status = st
	gw.Status.ObservedAt = &now
	if err := k.client.Status().Update(ctx, &gw); err != nil {
		return fmt.Errorf("update bridgegateway %s status: %w", k.nodeName, err)
	}
	k.last = &st
	return nil
}

// StatusFromReport renders a Report as BridgeGateway status (no
// timestamps but the probes', so equal reports give equal statuses).
func StatusFromReport(r Report) nbv1.BridgeGatewayStatus {
	var st nbv1.BridgeGatewayStatus
	for _, s := range r.Segments {
		st.Segments = append(st.Segments, nbv1.GatewaySegmentStatus{BridgeConfig: s.Key.BridgeConfig, Name: s.Key.Name,
			Role: s.Role, Programmed: s.Programmed, Error: s.Error})
	}
	for _, p := range r.Peers {
		ps := nbv1.GatewayPeerStatus{Address: p.Address.String(), ASN: int64(p.ASN), State: string(p.State),
			PrefixesSent: int64(p.RoutesSent), PrefixesReceived: int64(p.RoutesReceived), LastError: p.LastError}
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
			Segment: e.Segment.Name, IPs: addrStrings(e.IPs), MAC: e.MAC, FDBProgrammed: e.FDBProgrammed,
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
	return st
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}

// events compares this report with the previous one.
func (k *KubeStatus) events(r Report) {
	if k.recorder == nil {
		return
	}
	if !k.hasPrev {
		k.prev, k.hasPrev = r, true
		return
	}
	prevAdv := map[string]bool{}
	for _, e := range k.prev.Endpoints {
		prevAdv[e.Namespace+"/"+e.Name] = e.Advertised
	}
	for _, e := range r.Endpoints {
		if e.Advertised && !prevAdv[e.Namespace+"/"+e.Name] {
			k.recorder.Eventf(endpointRef(e.Namespace, e.Name), corev1.EventTypeNormal, "Activated",
				"gateway %s advertises %v", k.nodeName, addrStrings(e.IPs))
		}
	}
	prevRef := map[string]bool{}
	for _, f := range k.prev.Refused {
		prevRef[f.Namespace+"/"+f.Endpoint+"/"+f.IP.String()+"/"+f.Reason] = true
	}
	for _, f := range r.Refused {
		if !prevRef[f.Namespace+"/"+f.Endpoint+"/"+f.IP.String()+"/"+f.Reason] {
			k.recorder.Eventf(endpointRef(f.Namespace, f.Endpoint), corev1.EventTypeWarning, f.Reason,
				"gateway %s refuses %s: %s", k.nodeName, f.IP, f.Message)
		}
	}
	prevRole := map[SegmentKey]string{}
	for _, s := range k.prev.Segments {
		prevRole[s.Key] = s.Role
	}
	gwRef := &nbv1.BridgeGateway{TypeMeta: metav1.TypeMeta{APIVersion: nbv1.GroupVersion.String(), Kind: "BridgeGateway"},
		ObjectMeta: metav1.ObjectMeta{Name: k.nodeName}}
	for _, s := range r.Segments {
		old, ok := prevRole[s.Key]
		switch {
		case !ok || old == s.Role:
		case s.Role == "Active":
			k.recorder.Eventf(gwRef, corev1.EventTypeNormal, "LeaseAcquired", "segment %s: %s is now the active gateway (VLAN attached)", s.Key, k.nodeName)
		case old == "Active" && r.Degraded:
			k.recorder.Eventf(gwRef, corev1.EventTypeWarning, "Fenced", "segment %s: lease not renewed in time (%s): VLAN detached", s.Key, r.DegradedReason)
		case old == "Active":
			k.recorder.Eventf(gwRef, corev1.EventTypeNormal, "LeaseReleased", "segment %s: %s is standby now (VLAN detached)", s.Key, k.nodeName)
		}
	}
	k.prev = r
}

func endpointRef(ns, name string) *nbv1.BridgeEndpoint {
	return &nbv1.BridgeEndpoint{TypeMeta: metav1.TypeMeta{APIVersion: nbv1.GroupVersion.String(), Kind: "BridgeEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
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
