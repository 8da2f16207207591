package kube

import (
	"context"
	"fmt"
	"net/netip"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/gateway"
)

// StatusWriter writes the agent's own BridgeGateway (one writer) and emits
// events for activations, refusals and failovers. It writes only when the
// status changed.
type StatusWriter struct {
	client   client.Client
	recorder record.EventRecorder
	nodeName string
	role     gateway.Role
	log      *zap.Logger

	last    *nbv1.BridgeGatewayStatus
	prev    gateway.Report
	hasPrev bool
}

// NewStatusWriter returns a sink writing BridgeGateway nodeName.
func NewStatusWriter(c client.Client, rec record.EventRecorder, nodeName string, role gateway.Role, log *zap.Logger) *StatusWriter {
	return &StatusWriter{client: c, recorder: rec, nodeName: nodeName, role: role, log: log}
}

// Publish implements StatusSink.
func (k *StatusWriter) Publish(ctx context.Context, r gateway.Report) error {
	st := gateway.StatusFromReport(r)
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

// events compares this report with the previous one.
func (k *StatusWriter) events(r gateway.Report) {
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
	prevRole := map[gateway.SegmentKey]string{}
	for _, s := range k.prev.Segments {
		prevRole[s.Key] = s.Role
	}
	gwRef := &nbv1.BridgeGateway{TypeMeta: metav1.TypeMeta{APIVersion: nbv1.GroupVersion.String(), Kind: "BridgeGateway"},
		ObjectMeta: metav1.ObjectMeta{Name: k.nodeName}}
	for _, s := range r.Segments {
		old, ok := prevRole[s.Key]
		switch {
		case !ok || old == s.Role:
		case s.Role == string(nbv1.SegmentRoleActive):
			k.recorder.Eventf(gwRef, corev1.EventTypeNormal, "LeaseAcquired", "segment %s: %s is now the active gateway (VLAN attached)", s.Key, k.nodeName)
		case old == string(nbv1.SegmentRoleActive) && s.Fenced:
			// By its cause, not by Degraded: a planned release within
			// apiOutageShown of an outage is still a release.
			k.recorder.Eventf(gwRef, corev1.EventTypeWarning, "Fenced", "segment %s: lease not renewed in time (%s): VLAN detached", s.Key, fencedDetail(r))
		case old == string(nbv1.SegmentRoleActive):
			k.recorder.Eventf(gwRef, corev1.EventTypeNormal, "LeaseReleased", "segment %s: %s is standby now (VLAN detached)", s.Key, k.nodeName)
		}
	}
	k.loopEvents(gwRef, r)
	k.prev = r
}

// fencedDetail is what the report says of the API server at the fence.
func fencedDetail(r gateway.Report) string {
	if r.DegradedReason != "" {
		return r.DegradedReason
	}
	return "API server reachable: renewals did not land"
}

// loopEvents emits one Warning per new loop episode (a segment's episode
// is new when its first detection changed).
func (k *StatusWriter) loopEvents(gwRef *nbv1.BridgeGateway, r gateway.Report) {
	seen := map[string]bool{}
	for _, l := range k.prev.Loops {
		seen[l.Segment.String()+"@"+l.At.String()] = true
	}
	for _, l := range r.Loops {
		if !seen[l.Segment.String()+"@"+l.At.String()] {
			k.recorder.Event(gwRef, corev1.EventTypeWarning, nbv1.EventLoopDetected, gateway.LoopMessage(l))
		}
	}
}

func endpointRef(ns, name string) *nbv1.BridgeEndpoint {
	return &nbv1.BridgeEndpoint{TypeMeta: metav1.TypeMeta{APIVersion: nbv1.GroupVersion.String(), Kind: "BridgeEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func addrStrings(ips []netip.Addr) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	return out
}
