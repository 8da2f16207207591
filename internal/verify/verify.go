// Package verify holds the end-to-end checks of one Active BridgeEndpoint
// as its active gateway reports it — route advertised, FDB entry
// programmed, ARP (NDP) reachability — shared by `netbridgectl verify` and
// the controller's automatic cutover, so both judge a VM the same way.
package verify

import (
	"fmt"
	"net/netip"
	"strings"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
)

// Verdict of one check.
type Verdict string

const (
	OK         Verdict = "ok"
	No         Verdict = "NO"
	NotChecked Verdict = "-"
)

// Input is one endpoint and what its active gateway reports.
type Input struct {
	Endpoint *nbv1.BridgeEndpoint
	// Segment names the endpoint's segment in messages.
	Segment string
	// ActiveGateway is the segment's active gateway ("" when none).
	ActiveGateway string
	// Gateway is that gateway's BridgeGateway (nil: none reported).
	Gateway *nbv1.BridgeGateway
	// Config and Spec are the endpoint's BridgeConfig and segment; they
	// decide which checks apply (ChecksFor). Nil: every check applies.
	Config *nbv1.BridgeConfig
	Spec   *nbv1.Segment
}

// Checks says which checks apply to the endpoints of a segment.
type Checks struct {
	// Route: the gateways advertise a /32 (/128) per Active VM IP.
	Route bool
	// FDB and ARP apply to every Active endpoint.
	FDB, ARP bool
}

// ChecksFor decides which checks apply to an endpoint of seg in bc. Host
// routes are advertised only in phase Routed, with BGP configured and
// advertise.hostRoutes on (its default); elsewhere the route is not
// checked, so an Extended segment's VM is not reported as failing. A nil
// bc or seg (not known) keeps every check.
func ChecksFor(bc *nbv1.BridgeConfig, seg *nbv1.Segment) Checks {
	c := Checks{Route: true, FDB: true, ARP: true}
	if bc == nil || seg == nil {
		return c
	}
	c.Route = seg.Phase == nbv1.PhaseRouted && bc.Spec.BGP != nil && (bc.Spec.Advertise == nil || bc.Spec.Advertise.HostRoutes)
	return c
}

// Result of the checks. Problems name what is off, in words; Reason is
// the nbv1 reason of the first check that failed ("" when none did).
type Result struct {
	Route, FDB, ARP Verdict
	Problems        []string
	Reason          string
	// GatewayMessage is what the gateway says about the endpoint, worth
	// showing next to problems.
	GatewayMessage string
}

// Passed: every check that ran passed.
func (r Result) Passed() bool { return len(r.Problems) == 0 }

// Endpoint runs the checks. It is pure.
func Endpoint(in Input) Result {
	r := Result{Route: NotChecked, FDB: NotChecked, ARP: NotChecked}
	problem := func(reason, format string, args ...any) {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		if r.Reason == "" {
			r.Reason = reason
		}
	}
	ep := in.Endpoint
	if in.ActiveGateway == "" {
		problem(nbv1.ReasonNotReported, "segment %s has no active gateway", in.Segment)
		return r
	}
	if in.Gateway == nil {
		problem(nbv1.ReasonNotReported, "active gateway %s has no BridgeGateway status", in.ActiveGateway)
		return r
	}
	gep := GatewayEndpoint(in.Gateway, ep.Namespace, ep.Name)
	if gep == nil {
		problem(nbv1.ReasonNotReported, "active gateway %s does not list this endpoint (not programmed yet?)", in.ActiveGateway)
		return r
	}
	r.GatewayMessage = gep.Message
	checks := ChecksFor(in.Config, in.Spec)

	if checks.Route {
		prefixes, bad := HostPrefixes(ep.Spec.IPs)
		if len(bad) > 0 {
			problem(nbv1.ReasonRouteNotAdvertised, "unparsable IPs %s", strings.Join(bad, ", "))
		}
		adv := AdvertisedSet(in.Gateway)
		var missing []string
		for _, p := range prefixes {
			if !adv[p] {
				missing = append(missing, p)
			}
		}
		switch {
		case !gep.Advertised:
			r.Route = No
			problem(nbv1.ReasonRouteNotAdvertised, "route not advertised by %s", in.ActiveGateway)
		case len(missing) > 0:
			r.Route = No
			problem(nbv1.ReasonRouteNotAdvertised, "%s not in %s's advertised prefixes", strings.Join(missing, ", "), in.ActiveGateway)
		case len(prefixes) == 0:
			r.Route = No
			problem(nbv1.ReasonRouteNotAdvertised, "endpoint has no IPs to advertise")
		default:
			r.Route = OK
		}
	}
	switch {
	case !checks.FDB:
	case gep.FDBProgrammed:
		r.FDB = OK
	default:
		r.FDB = No
		mac := ep.Spec.MAC
		if mac == "" {
			mac = gep.MAC
		}
		problem(nbv1.ReasonFDBNotProgrammed, "FDB entry for %s → %s not programmed on %s", mac, ep.Spec.VTEP, in.ActiveGateway)
	}
	switch {
	case !checks.ARP:
	case gep.Reachable:
		r.ARP = OK
	default:
		r.ARP = No
		msg := fmt.Sprintf("VM did not answer ARP across the segment from %s", in.ActiveGateway)
		if gep.LastProbe != nil {
			msg += " (last probe " + gep.LastProbe.UTC().Format("15:04:05") + ")"
		}
		problem(nbv1.ReasonNotReachable, "%s", msg)
	}
	return r
}

// GatewayEndpoint is the gateway's report of one endpoint (nil: not listed).
func GatewayEndpoint(gw *nbv1.BridgeGateway, namespace, name string) *nbv1.GatewayEndpointStatus {
	for i := range gw.Status.Endpoints {
		ep := &gw.Status.Endpoints[i]
		if ep.Namespace == namespace && ep.Name == name {
			return ep
		}
	}
	return nil
}

// HostPrefix is the /32 (/128) of an IP (an optional prefix length is
// ignored).
func HostPrefix(ip string) (netip.Prefix, error) {
	s := strings.TrimSpace(ip)
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("ip %q: %w", ip, err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// HostPrefixes converts IPs, skipping (and returning) unparsable ones.
func HostPrefixes(ips []string) (prefixes, bad []string) {
	for _, ip := range ips {
		p, err := HostPrefix(ip)
		if err != nil {
			bad = append(bad, ip)
			continue
		}
		prefixes = append(prefixes, p.String())
	}
	return prefixes, bad
}

// AdvertisedSet normalises a gateway's advertised list.
func AdvertisedSet(gw *nbv1.BridgeGateway) map[string]bool {
	set := map[string]bool{}
	if gw == nil {
		return set
	}
	for _, a := range gw.Status.Advertised {
		if p, err := netip.ParsePrefix(strings.TrimSpace(a)); err == nil {
			set[netip.PrefixFrom(p.Addr().Unmap(), p.Bits()).String()] = true
		} else {
			set[a] = true
		}
	}
	return set
}
