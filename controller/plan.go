package controller

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/controller/kubevirt"
	"github.com/netbridge-io/netbridge/internal/config"
)

// Reasons of the Advertised and Reachable conditions, which only the
// controller writes; refusal reasons (Rejected, Conflict) are the API's
// nbv1.RefusalReason values.
const (
	ReasonAdvertised    = "Advertised"
	ReasonPending       = "Pending"
	ReasonProbeAnswered = "ProbeAnswered"
	ReasonNoProbeAnswer = "NoProbeAnswer"
	// ReasonNameCollision: two VMI interfaces map to one endpoint name
	// (a hash collision of nbv1.EndpointName); the later one is not managed.
	ReasonNameCollision = "EndpointNameCollision"
)

// managedConditions are the endpoint condition types this controller owns;
// any other type found on an endpoint is left alone.
var managedConditions = []string{nbv1.ConditionConflict, nbv1.ConditionRejected, nbv1.ConditionAdvertised, nbv1.ConditionReachable, nbv1.ConditionDegraded, nbv1.ConditionNodeNotReady, nbv1.ConditionAutoCutover}

// GatewayView is what the segment's active gateway reports about endpoints.
type GatewayView struct {
	// Name of the active gateway (the lease holder); empty when none.
	Name string
	// Advertised host prefixes, e.g. "10.20.100.10/32".
	Advertised map[string]bool
	// Endpoints by "namespace/name".
	Endpoints map[string]nbv1.GatewayEndpointStatus
	// Refused by "namespace/name".
	Refused map[string][]nbv1.RefusedEndpoint
}

// SegmentInput is everything the plan for one segment depends on.
type SegmentInput struct {
	BridgeConfig string
	// Segment is nil when the BridgeConfig or the segment is gone: every
	// existing endpoint is then deleted.
	Segment *nbv1.Segment
	// Refused is why the BridgeConfig is not Ready ("" when it is).
	Refused string
	// VMIs labelled for this segment.
	VMIs []*kubevirt.VMI
	// NamespaceLabels of every namespace a VMI lives in (missing: no labels).
	NamespaceLabels map[string]labels.Set
	// VTEPs by node name.
	VTEPs map[string]string
	// VTEPErrors by node name: the node's VTEP annotation is unusable; its
	// endpoints keep their last VTEP and say why (Degraded).
	VTEPErrors map[string]string
	// Limits bound the semantic checks of the segment (zero: defaults).
	Limits config.Limits
	// Existing endpoints of this segment.
	Existing []*nbv1.BridgeEndpoint
	// Gateway is the active gateway's report (nil: no active gateway).
	Gateway *GatewayView
	// NodeReady by node name: the node carries the segment's readiness
	// label. Nil: readiness is not reported.
	NodeReady map[string]bool
	Now       metav1.Time
}

// Event is a Kubernetes event the plan asks for, regarding a VMI.
type Event struct {
	Regarding corev1.ObjectReference
	Type      string
	Reason    string
	Message   string
}

// SegmentPlan is the minimal set of writes that brings a segment to its
// desired state. Objects in it are fresh copies, safe to send.
type SegmentPlan struct {
	Create       []*nbv1.BridgeEndpoint
	Update       []*nbv1.BridgeEndpoint
	UpdateStatus []*nbv1.BridgeEndpoint
	Delete       []*nbv1.BridgeEndpoint
	Events       []Event
	// Counts of the desired endpoints by state, and refused ones.
	Counts nbv1.EndpointCounts
}

// Empty reports whether the plan writes nothing.
func (p *SegmentPlan) Empty() bool {
	return len(p.Create)+len(p.Update)+len(p.UpdateStatus)+len(p.Delete)+len(p.Events) == 0
}

type candidate struct {
	vmi      *kubevirt.VMI
	desired  *nbv1.BridgeEndpoint
	existing *nbv1.BridgeEndpoint
	conds    []metav1.Condition
}

// PlanSegment computes the desired endpoints of one segment and the writes
// that get there from the existing ones. It is pure: no API calls, inputs
// are not modified.
func PlanSegment(in SegmentInput) SegmentPlan {
	var plan SegmentPlan
	existing := make(map[string]*nbv1.BridgeEndpoint, len(in.Existing))
	for _, e := range in.Existing {
		existing[e.Namespace+"/"+e.Name] = e
	}
	if in.Segment == nil {
		plan.Delete = deleteAll(in.Existing)
		return plan
	}

	seg, segErrs := config.ParseSegment(in.BridgeConfig, *in.Segment, config.Uplink{}, in.Limits,
		field.NewPath("spec", "segments").Key(in.Segment.Name))
	if len(segErrs) > 0 && in.Refused == "" {
		// The BridgeConfig verdict says the same; never program half of it.
		in.Refused = ReasonInvalidSpec + ": " + segErrs.ToAggregate().Error()
	}

	cands := make([]*candidate, 0, len(in.VMIs))
	seen := make(map[string]*kubevirt.VMI, len(in.VMIs))
	for _, vmi := range in.VMIs {
		iface := vmi.PrimaryInterface()
		key := vmi.Namespace + "/" + nbv1.EndpointName(vmi.Name, iface)
		if other := seen[key]; other != nil {
			plan.Events = append(plan.Events, Event{Regarding: vmiRef(vmi), Type: corev1.EventTypeWarning, Reason: ReasonNameCollision,
				Message: fmt.Sprintf("endpoint %s is already VMI %s/%s's: this VMI is not managed", key, other.Namespace, other.Name)})
			continue
		}
		seen[key] = vmi
		c := &candidate{vmi: vmi, existing: existing[key]}
		c.desired = desiredEndpoint(in, vmi, iface, c.existing)
		cands = append(cands, c)
	}
	// The earlier claimant keeps a contested IP: creation time, then name.
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i].vmi, cands[j].vmi
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})

	claims := make(map[string]*kubevirt.VMI)
	for _, c := range cands {
		var degraded []string
		held := holdActive(in, c)
		switch {
		case held:
			// A BridgeConfig edit that failed validation must not withdraw
			// what works: the endpoint stays Active with the IPs it had.
			c.desired.Spec.IPs = append([]string(nil), c.existing.Spec.IPs...)
			degraded = append(degraded, fmt.Sprintf("BridgeConfig %s is not Ready (%s): endpoint held Active as it was until the spec is valid", in.BridgeConfig, in.Refused))
			for _, ip := range c.desired.Spec.IPs {
				claims[ip] = c.vmi
			}
		default:
			if cond := rejection(in, c, &seg); cond != nil {
				c.conds = append(c.conds, *cond)
			} else if cond := conflict(c, claims); cond != nil {
				c.conds = append(c.conds, *cond)
			} else {
				for _, ip := range c.desired.Spec.IPs {
					claims[ip] = c.vmi
				}
			}
		}
		refused := len(c.conds) > 0
		c.desired.Spec.State = cutoverState(in.Segment, c.vmi, c.desired, refused)
		if held && c.desired.Spec.State != nbv1.StateWithdrawn {
			c.desired.Spec.State = nbv1.StateActive // rollback is still honoured
		}
		c.conds = append(c.conds, gatewayConditions(in.Gateway, c.desired)...)
		if cond := autoCutoverCondition(c.vmi); cond != nil {
			c.conds = append(c.conds, *cond)
		}
		if cond := nodeNotReady(in, c.desired); cond != nil {
			c.conds = append(c.conds, *cond)
		}
		if msg := in.VTEPErrors[c.desired.Spec.NodeName]; msg != "" {
			degraded = append(degraded, vtepMessage(msg, c.desired.Spec.VTEP))
		}
		if len(degraded) > 0 {
			reason := nbv1.ReasonInvalidVTEP
			if held {
				reason = nbv1.ReasonBridgeConfigNotReady
			}
			c.conds = append(c.conds, metav1.Condition{Type: nbv1.ConditionDegraded, Status: metav1.ConditionTrue,
				Reason: string(reason), Message: strings.Join(degraded, "; ")})
		}
		count(&plan.Counts, c.desired.Spec.State, refused)
		plan.add(in.Now, c)
	}

	for _, e := range in.Existing {
		if seen[e.Namespace+"/"+e.Name] == nil {
			plan.Delete = append(plan.Delete, e.DeepCopy())
		}
	}
	return plan
}

// nodeNotReady reports an endpoint whose node does not carry the
// segment's readiness label: the VM there has no segment bridge to join.
func nodeNotReady(in SegmentInput, ep *nbv1.BridgeEndpoint) *metav1.Condition {
	node := ep.Spec.NodeName
	if in.NodeReady == nil || node == "" || in.NodeReady[node] {
		return nil
	}
	label := nbv1.SegmentReadyLabel(SegmentKey{BridgeConfig: in.BridgeConfig, Segment: in.Segment.Name})
	return &metav1.Condition{Type: nbv1.ConditionNodeNotReady, Status: metav1.ConditionTrue, Reason: nbv1.ReasonSegmentNotReady,
		Message: fmt.Sprintf("node %s has no label %s=%s: its agent has not reported the segment bridge %s built; give the VM that label in its node affinity",
			node, label, nbv1.SegmentReadyValue, nbv1.SegmentBridgeName(uint32(in.Segment.VNI)))}
}

// holdActive: the BridgeConfig is not Ready and the endpoint was Active
// before, on this same segment.
func holdActive(in SegmentInput, c *candidate) bool {
	return in.Refused != "" && c.existing != nil && c.existing.Spec.State == nbv1.StateActive
}

func vtepMessage(bad, kept string) string {
	if kept == "" {
		return bad + "; no VTEP for this endpoint until it is fixed"
	}
	return bad + "; keeping the last good VTEP " + kept
}

func vmiRef(v *kubevirt.VMI) corev1.ObjectReference {
	return corev1.ObjectReference{
		APIVersion: kubevirt.GroupVersion.String(),
		Kind:       kubevirt.VMIGVK.Kind,
		Namespace:  v.Namespace,
		Name:       v.Name,
		UID:        v.UID,
	}
}

func deleteAll(eps []*nbv1.BridgeEndpoint) []*nbv1.BridgeEndpoint {
	out := make([]*nbv1.BridgeEndpoint, 0, len(eps))
	for _, e := range eps {
		out = append(out, e.DeepCopy())
	}
	return out
}

func count(c *nbv1.EndpointCounts, s nbv1.CutoverState, refused bool) {
	switch s {
	case nbv1.StateActive:
		c.Active++
	case nbv1.StateWithdrawn:
		c.Withdrawn++
	default:
		c.Staged++
	}
	if refused {
		c.Refused++
	}
}

// desiredEndpoint derives the endpoint spec from the VMI. Missing guest data
// (no IPs, no MAC, no node yet) keeps what the existing endpoint has: an
// empty guest-agent report means "not yet", never "withdraw".
func desiredEndpoint(in SegmentInput, vmi *kubevirt.VMI, iface string, existing *nbv1.BridgeEndpoint) *nbv1.BridgeEndpoint {
	st, _ := vmi.InterfaceStatus(iface)
	var ips []string
	if raw, ok := vmi.Annotations[nbv1.AnnotationIPs]; ok && strings.TrimSpace(raw) != "" {
		ips = splitIPs(raw)
	} else {
		ips = statusIPs(st)
		if len(ips) == 0 && existing != nil {
			ips = append([]string(nil), existing.Spec.IPs...)
		}
	}
	mac := strings.ToLower(st.MAC)
	if mac == "" {
		mac = strings.ToLower(strings.TrimSpace(vmi.Annotations[nbv1.AnnotationMAC]))
	}
	if mac == "" && existing != nil {
		mac = existing.Spec.MAC
	}
	node := vmi.Status.NodeName
	if node == "" && existing != nil {
		node = existing.Spec.NodeName
	}
	vtep := in.VTEPs[node]
	if _, bad := in.VTEPErrors[node]; bad && existing != nil && existing.Spec.NodeName == node {
		vtep = existing.Spec.VTEP // the last good one; never a bad annotation's text
	}
	return &nbv1.BridgeEndpoint{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: vmi.Namespace,
			Name:      nbv1.EndpointName(vmi.Name, iface),
			Labels: map[string]string{
				nbv1.LabelBridgeConfig: in.BridgeConfig,
				nbv1.LabelSegmentName:  in.Segment.Name,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion:         kubevirt.GroupVersion.String(),
				Kind:               kubevirt.VMIGVK.Kind,
				Name:               vmi.Name,
				UID:                vmi.UID,
				Controller:         ptr.To(true),
				BlockOwnerDeletion: ptr.To(false),
			}},
		},
		Spec: nbv1.BridgeEndpointSpec{
			BridgeConfig: in.BridgeConfig,
			Segment:      in.Segment.Name,
			VMI:          vmi.Name,
			Interface:    iface,
			IPs:          ips,
			MAC:          mac,
			NodeName:     node,
			VTEP:         vtep,
		},
	}
}

// splitIPs parses the annotation; invalid entries are kept verbatim so that
// the rejection names them.
func splitIPs(raw string) []string {
	var out []string
	seen := map[string]bool{}
	for _, f := range strings.Split(raw, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if a, err := netip.ParseAddr(f); err == nil {
			f = a.Unmap().String() // one spelling, so claims compare
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// statusIPs takes the guest agent's addresses minus link-local ones, which
// every IPv6 guest reports and which are never preserved.
func statusIPs(st kubevirt.InterfaceStatus) []string {
	raw := st.IPAddresses
	if len(raw) == 0 && st.IPAddress != "" {
		raw = []string{st.IPAddress}
	}
	var out []string
	seen := map[string]bool{}
	for _, s := range raw {
		// KubeVirt may report "addr/prefix".
		s = strings.TrimSpace(s)
		if i := strings.IndexByte(s, '/'); i >= 0 {
			s = s[:i]
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.IsLinkLocalUnicast() || a.IsLoopback() || a.IsUnspecified() {
			continue
		}
		a = a.Unmap()
		if !seen[a.String()] {
			seen[a.String()] = true
			out = append(out, a.String())
		}
	}
	return out
}

// rejection refuses an endpoint of a BridgeConfig that is not Ready, of a
// namespace the segment does not allow, or with an IP the segment cannot
// give a VM (config.CheckEndpoint names the rule).
func rejection(in SegmentInput, c *candidate, seg *config.Segment) *metav1.Condition {
	rej := func(reason nbv1.RefusalReason, msg string) *metav1.Condition {
		return &metav1.Condition{Type: nbv1.ConditionRejected, Status: metav1.ConditionTrue, Reason: string(reason), Message: msg}
	}
	if in.Refused != "" {
		return rej(nbv1.ReasonBridgeConfigNotReady, fmt.Sprintf("BridgeConfig %s is not Ready: %s", in.BridgeConfig, in.Refused))
	}
	ns := c.vmi.Namespace
	if !seg.NamespaceSelector.Matches(in.NamespaceLabels[ns]) {
		return rej(nbv1.ReasonNamespaceNotAllowed, fmt.Sprintf("namespace %s is not allowed on segment %s (namespaceSelector %s)", ns, seg.Key, seg.NamespaceSelector))
	}
	if refused := config.CheckEndpoint(seg, c.desired.Spec.IPs); len(refused) > 0 {
		return rej(refused[0].Reason, refused[0].Message)
	}
	return nil
}

func conflict(c *candidate, claims map[string]*kubevirt.VMI) *metav1.Condition {
	for _, ip := range c.desired.Spec.IPs {
		if other, ok := claims[ip]; ok {
			return &metav1.Condition{
				Type:    nbv1.ConditionConflict,
				Status:  metav1.ConditionTrue,
				Reason:  string(nbv1.ReasonDuplicateIP),
				Message: fmt.Sprintf("IP %s is already claimed by VMI %s/%s", ip, other.Namespace, other.Name),
			}
		}
	}
	return nil
}

// cutoverState: a refused endpoint, or one without addresses, is never
// Active; rollback wins over everything.
func cutoverState(seg *nbv1.Segment, vmi *kubevirt.VMI, ep *nbv1.BridgeEndpoint, refused bool) nbv1.CutoverState {
	switch strings.ToLower(strings.TrimSpace(vmi.Annotations[nbv1.AnnotationCutover])) {
	case nbv1.CutoverRollback:
		return nbv1.StateWithdrawn
	case nbv1.CutoverActive:
		if !refused && len(ep.Spec.IPs) > 0 {
			return nbv1.StateActive
		}
	default:
		if seg.AutoActivate && !refused && len(ep.Spec.IPs) > 0 {
			return nbv1.StateActive
		}
	}
	return nbv1.StateStaged
}

// gatewayConditions mirror the active gateway's report onto an Active
// endpoint; other states carry no Advertised/Reachable condition because
// gateways ignore them.
func gatewayConditions(gw *GatewayView, ep *nbv1.BridgeEndpoint) []metav1.Condition {
	if ep.Spec.State != nbv1.StateActive {
		return nil
	}
	if gw == nil || gw.Name == "" {
		return []metav1.Condition{{Type: nbv1.ConditionAdvertised, Status: metav1.ConditionFalse, Reason: ReasonPending, Message: "segment has no active gateway"}}
	}
	key := ep.Namespace + "/" + ep.Name
	if refused := gw.Refused[key]; len(refused) > 0 {
		r := refused[0]
		msg := fmt.Sprintf("gateway %s refused IP %s", gw.Name, r.IP)
		if r.MAC != "" {
			msg += fmt.Sprintf(": answered by MAC %s", r.MAC)
		}
		if r.Message != "" {
			msg += ": " + r.Message
		}
		reason := r.Reason
		if reason == "" {
			reason = string(nbv1.ReasonDuplicateAddress)
		}
		return []metav1.Condition{{Type: nbv1.ConditionAdvertised, Status: metav1.ConditionFalse, Reason: reason, Message: msg}}
	}
	var out []metav1.Condition
	st, listed := gw.Endpoints[key]
	if (listed && st.Advertised) || allAdvertised(gw.Advertised, ep.Spec.IPs) {
		out = append(out, metav1.Condition{Type: nbv1.ConditionAdvertised, Status: metav1.ConditionTrue, Reason: ReasonAdvertised, Message: "advertised by gateway " + gw.Name})
	} else {
		msg := "waiting for gateway " + gw.Name
		if listed && st.Message != "" {
			// The gateway says why (phase Extended, no IPv6 peer, ...).
			msg += ": " + st.Message
		}
		out = append(out, metav1.Condition{Type: nbv1.ConditionAdvertised, Status: metav1.ConditionFalse, Reason: ReasonPending, Message: msg})
	}
	if listed {
		if st.Reachable {
			out = append(out, metav1.Condition{Type: nbv1.ConditionReachable, Status: metav1.ConditionTrue, Reason: ReasonProbeAnswered, Message: "answered the probe of gateway " + gw.Name})
		} else {
			out = append(out, metav1.Condition{Type: nbv1.ConditionReachable, Status: metav1.ConditionFalse, Reason: ReasonNoProbeAnswer, Message: "no answer to the probe of gateway " + gw.Name})
		}
	}
	return out
}

func allAdvertised(adv map[string]bool, ips []string) bool {
	if len(ips) == 0 || len(adv) == 0 {
		return false
	}
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil || !adv[prefixOf(a)] {
			return false
		}
	}
	return true
}

// add turns one candidate into writes: create, or update of metadata/spec
// and/or status, and events for newly raised Conflict/Rejected conditions.
func (p *SegmentPlan) add(now metav1.Time, c *candidate) {
	d := c.desired
	if c.existing == nil {
		d.Status.Conditions = mergeConditions(nil, c.conds, now)
		p.Create = append(p.Create, d)
		p.events(c, nil)
		return
	}
	e := c.existing
	if !metaSpecEqual(e, d) {
		u := e.DeepCopy()
		u.Labels = mergeLabels(u.Labels, d.Labels)
		u.OwnerReferences = d.OwnerReferences
		u.Spec = d.Spec
		p.Update = append(p.Update, u)
	}
	conds := mergeConditions(e.Status.Conditions, c.conds, now)
	if !equality.Semantic.DeepEqual(conds, e.Status.Conditions) && !(len(conds) == 0 && len(e.Status.Conditions) == 0) {
		u := e.DeepCopy()
		u.Status.Conditions = conds
		u.Status.ObservedGeneration = e.Generation
		p.UpdateStatus = append(p.UpdateStatus, u)
	}
	p.events(c, e.Status.Conditions)
}

// events raises an event when a Conflict, Rejected, Degraded or
// NodeNotReady condition is new or says something new, so that a resync
// never repeats one.
func (p *SegmentPlan) events(c *candidate, old []metav1.Condition) {
	for _, cond := range c.conds {
		if cond.Type != nbv1.ConditionConflict && cond.Type != nbv1.ConditionRejected && cond.Type != nbv1.ConditionDegraded && cond.Type != nbv1.ConditionNodeNotReady {
			continue
		}
		if prev := meta.FindStatusCondition(old, cond.Type); prev != nil && prev.Status == cond.Status && prev.Reason == cond.Reason && prev.Message == cond.Message {
			continue
		}
		p.Events = append(p.Events, Event{
			Regarding: vmiRef(c.vmi),
			Type:      corev1.EventTypeWarning,
			Reason:    cond.Reason,
			Message:   fmt.Sprintf("endpoint %s/%s: %s", c.desired.Namespace, c.desired.Name, cond.Message),
		})
	}
}

// mergeConditions sets the wanted conditions on a copy of old and drops the
// managed types that are no longer wanted; transition times survive when
// the status does not change.
func mergeConditions(old, want []metav1.Condition, now metav1.Time) []metav1.Condition {
	out := make([]metav1.Condition, 0, len(old)+len(want))
	for _, c := range old {
		out = append(out, *c.DeepCopy())
	}
	wanted := make(map[string]bool, len(want))
	for _, w := range want {
		wanted[w.Type] = true
		w.LastTransitionTime = now
		meta.SetStatusCondition(&out, w)
	}
	for _, t := range managedConditions {
		if !wanted[t] {
			meta.RemoveStatusCondition(&out, t)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func metaSpecEqual(e, d *nbv1.BridgeEndpoint) bool {
	for k, v := range d.Labels {
		if e.Labels[k] != v {
			return false
		}
	}
	if len(e.OwnerReferences) != 1 || !equality.Semantic.DeepEqual(e.OwnerReferences, d.OwnerReferences) {
		return false
	}
	return equality.Semantic.DeepEqual(normSpec(e.Spec), normSpec(d.Spec))
}

// normSpec makes nil and empty IP lists equal (the API server drops empty
// omitempty lists).
func normSpec(s nbv1.BridgeEndpointSpec) nbv1.BridgeEndpointSpec {
	if len(s.IPs) == 0 {
		s.IPs = nil
	}
	return s
}

func mergeLabels(have, want map[string]string) map[string]string {
	out := make(map[string]string, len(have)+len(want))
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}
