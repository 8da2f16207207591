package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/bgp"
)

// Report is what one reconcile found and did, in plain values; the status
// sink turns it into a BridgeGateway, metrics read it too.
type Report struct {
	NodeName   string
	Role       Role
	Segments   []SegmentReport
	Peers      []bgp.PeerStatus
	Advertised []netip.Prefix
	Endpoints  []EndpointReport
	Refused    []RefusedReport
	Problems   []string
	// Degraded: the API server is unreachable (fail static) or something
	// could not be applied.
	Degraded       bool
	DegradedReason string
	// LoopProbe: the loop probe runs; Loops are its recent episodes.
	LoopProbe bool
	Loops     []LoopReport
	At        time.Time
}

// SegmentReport is one segment on this host.
type SegmentReport struct {
	Key        SegmentKey
	Role       string // Active, Standby, Node
	Programmed bool
	Error      string
	Phase      Phase
	// Egress is "Local" while this host answers for the gateway address.
	Egress string
	// Sweep is the last legacy-side sweep (Routed, active gateway only).
	Sweep *SweepResult
	// Fenced: a standby because the lease lapsed, not by a release (the
	// cause the Fenced event names).
	Fenced bool
}

// EndpointReport is one active endpoint as this gateway programmed it.
type EndpointReport struct {
	Namespace, Name string
	Segment         SegmentKey
	IPs             []netip.Addr
	MAC             string
	FDBProgrammed   bool
	Advertised      bool
	Reachable       bool
	LastProbe       time.Time
	Message         string
}

// RefusedReport is an IP that is not advertised, and why.
type RefusedReport struct {
	Namespace, Endpoint string
	IP                  netip.Addr
	Reason              string
	MAC                 string
	Message             string
}

// buildReport renders what the pass found and did; the BGP peers are read
// from the speaker, probe results from the gate and the reachability checker.
func (a *Agent) buildReport(ctx context.Context, p *pass) Report {
	advertised := a.advertised
	if p.advertised != nil {
		advertised = p.advertised
	}
	r := Report{NodeName: a.opts.NodeName, Role: a.opts.Role, Problems: p.problems, At: time.Now(),
		Segments: segmentReports(a.opts.Role, p), Advertised: sortedPrefixes(advertised)}
	a.addSweeps(r.Segments, p)
	if a.deps.Election != nil {
		for i := range r.Segments {
			r.Segments[i].Fenced = r.Segments[i].Role == string(nbv1.SegmentRoleStandby) && a.deps.Election.Fenced(r.Segments[i].Key)
		}
	}
	if a.deps.Speaker != nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if st, err := a.deps.Speaker.Status(sctx); err == nil {
			r.Peers = st.Peers
		}
		cancel()
	}
	if a.opts.Role == RoleGateway {
		r.Endpoints = a.endpointReports(p, r.Segments, advertised)
		r.Refused = a.refusedReports(p.plan)
	}
	r.Degraded, r.DegradedReason = a.degraded(p)
	if a.loop != nil {
		r.LoopProbe, r.Loops = true, a.loop.reports(r.At)
	}
	return r
}

func segmentReports(role Role, p *pass) []SegmentReport {
	var out []SegmentReport
	for _, s := range p.d.Segments {
		sr := SegmentReport{Key: s.Key, Role: string(nbv1.SegmentRoleNode), Phase: s.Phase}
		if role == RoleGateway {
			sr.Role = string(nbv1.SegmentRoleStandby)
			if p.attached[s.Key] {
				sr.Role = string(nbv1.SegmentRoleActive)
			}
		}
		if msg, bad := p.segErr[s.Key]; bad {
			sr.Error = msg
		} else {
			sr.Programmed = true
			if role == RoleGateway && p.attached[s.Key] && egressGuarded(p.plan, s) {
				sr.Egress = string(nbv1.EgressLocal)
			}
		}
		out = append(out, sr)
	}
	return out
}

// endpointReports: per Active endpoint, whether its FDB entry and routes
// are in place and whether it answered the last reachability check.
func (a *Agent) endpointReports(p *pass, segs []SegmentReport, advertised map[netip.Prefix]bool) []EndpointReport {
	programmed := map[SegmentKey]bool{}
	segErr := map[SegmentKey]string{}
	for _, s := range segs {
		programmed[s.Key] = s.Programmed
		segErr[s.Key] = s.Error
	}
	var out []EndpointReport
	for _, e := range p.d.Endpoints {
		if e.State != StateActive {
			continue
		}
		er := EndpointReport{Namespace: e.Namespace, Name: e.Name, Segment: e.Segment, IPs: e.IPs,
			FDBProgrammed: programmed[e.Segment] && e.MAC != nil}
		if e.MAC != nil {
			er.MAC = e.MAC.String()
		}
		adv := p.plan.Advertised[e.ID()]
		er.Advertised = len(adv) > 0
		for _, pfx := range adv {
			if !advertised[pfx] {
				er.Advertised = false
			}
		}
		var why []string
		for _, u := range p.plan.Unadvertised {
			if u.Endpoint == e.ID() {
				why = append(why, u.Message)
			}
		}
		if !programmed[e.Segment] && segErr[e.Segment] != "" {
			// Not pending: waiting will not help until the segment is fixed.
			why = append(why, "not bridged: "+segErr[e.Segment])
		}
		er.Message = strings.Join(why, "; ")
		er.Reachable = len(e.IPs) > 0
		for _, ip := range e.IPs {
			if !ip.Is4() {
				continue
			}
			res, ok := a.reachResult(ip)
			if !ok || !res.Reachable {
				er.Reachable = false
				if ok && res.AnsweredBy != nil {
					er.Message = joinMessage(er.Message, fmt.Sprintf("%s answered by %s, not the VM", ip, res.AnsweredBy))
				}
			}
			if ok && res.At.After(er.LastProbe) {
				er.LastProbe = res.At
			}
		}
		out = append(out, er)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out
}

func (a *Agent) refusedReports(plan hostPlan) []RefusedReport {
	var out []RefusedReport
	for _, f := range plan.Refused {
		ns, name := splitID(f.Endpoint)
		rr := RefusedReport{Namespace: ns, Endpoint: name, IP: f.IP, Reason: f.Reason, Message: f.Message}
		if f.Reason == string(nbv1.ReasonDuplicateAddress) {
			if mac, ok := a.deps.Gate.Duplicate(f.IP); ok {
				rr.MAC = mac.String()
				rr.Message = fmt.Sprintf("%s is answered on the VLAN side by %s: the source VM may still be running", f.IP, mac)
			}
		}
		out = append(out, rr)
	}
	return out
}

// degraded says why the agent is degraded, the most important reason first.
func (a *Agent) degraded(p *pass) (bool, string) {
	var outage string
	var ongoing bool
	if a.deps.Election != nil {
		ended := a.apiOutage.lastEnd
		outage, ongoing = a.apiOutage.observe(a.deps.Election.APIReachable(), time.Now())
		if a.apiOutage.lastEnd != ended {
			a.log.Warn("API server reachable again", zap.String("event", "apiOutageEnded"),
				zap.Duration("outage", a.apiOutage.lastEnd.Sub(a.apiOutage.lastStart)))
		}
	}
	switch {
	case ongoing:
		return true, outage
	case p.dpErr != nil:
		return true, p.dpErr.Error()
	case p.bgpErr != nil:
		return true, p.bgpErr.Error()
	case len(p.segErr) > 0:
		// A segment that cannot be programmed (a missing uplink, an MTU
		// the underlay cannot carry) is a change not applied.
		var es []string
		for _, s := range p.d.Segments {
			if e, ok := p.segErr[s.Key]; ok {
				es = append(es, e)
			}
		}
		return true, strings.Join(es, "; ")
	case len(p.segWarn) > 0:
		var ws []string
		for _, s := range p.d.Segments {
			if w, ok := p.segWarn[s.Key]; ok {
				ws = append(ws, w)
			}
		}
		return true, strings.Join(ws, "; ")
	case outage != "":
		return true, outage
	}
	return false, ""
}

// apiOutageShown is how long the gateway still reports Degraded about an
// API server outage once it is over: nothing could be written during it,
// so this is how the operator learns that one happened.
const apiOutageShown = 5 * time.Minute

// apiOutages remembers this agent's last API server outage, as seen by
// its reconcile passes (one runs at every change of reachability).
type apiOutages struct {
	since              time.Time // start of the ongoing one; zero while reachable
	lastStart, lastEnd time.Time // the last one that ended
}

// observe records the reachability seen at now and returns what to
// report: the ongoing outage, one that ended less than apiOutageShown
// ago, or "".
func (o *apiOutages) observe(reachable bool, now time.Time) (msg string, ongoing bool) {
	if !reachable {
		if o.since.IsZero() {
			o.since = now
		}
		return "API server unreachable: keeping the last applied state", true
	}
	if !o.since.IsZero() {
		o.lastStart, o.lastEnd, o.since = o.since, now, time.Time{}
	}
	if o.lastEnd.IsZero() || now.Sub(o.lastEnd) >= apiOutageShown {
		return "", false
	}
	return fmt.Sprintf("API server was unreachable for %s until %s: forwarding kept the last applied state",
		o.lastEnd.Sub(o.lastStart).Round(time.Second), o.lastEnd.UTC().Format(time.RFC3339)), false
}

func (a *Agent) reachResult(ip netip.Addr) (ReachResult, bool) {
	if a.deps.Reach == nil {
		return ReachResult{}, false
	}
	return a.deps.Reach.Result(ip)
}

func splitID(id string) (string, string) {
	for i := 0; i < len(id); i++ {
		if id[i] == '/' {
			return id[:i], id[i+1:]
		}
	}
	return "", id
}

func joinMessage(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
