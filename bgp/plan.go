package bgp

import (
	"net/netip"
	"slices"
)

// routePlan is the minimal set of path operations turning actual into desired.
type routePlan struct {
	Add      []Route // new prefixes
	Update   []Route // same prefix, other attributes: re-added (implicit withdraw)
	Withdraw []Route // the routes as currently advertised
}

func (p routePlan) empty() bool { return len(p.Add)+len(p.Update)+len(p.Withdraw) == 0 }

// planRoutes compares desired routes (already guarded, unique prefixes) with
// the routes the speaker currently advertises.
func planRoutes(desired []Route, actual map[netip.Prefix]Route) routePlan {
	var p routePlan
	want := make(map[netip.Prefix]struct{}, len(desired))
	for _, r := range desired {
		want[r.Prefix] = struct{}{}
		cur, ok := actual[r.Prefix]
		switch {
		case !ok:
			p.Add = append(p.Add, r)
		case !cur.Equal(r):
			p.Update = append(p.Update, r)
		}
	}
	for pfx, r := range actual {
		if _, ok := want[pfx]; !ok {
			p.Withdraw = append(p.Withdraw, r)
		}
	}
	// Deterministic order for logs and tests.
	slices.SortFunc(p.Withdraw, func(a, b Route) int { return comparePrefix(a.Prefix, b.Prefix) })
	return p
}

// peerPlan is the minimal set of neighbour operations.
type peerPlan struct {
	Add    []Peer
	Update []Peer // changed parameters: removed and added again
	Remove []netip.Addr
}

func (p peerPlan) empty() bool { return len(p.Add)+len(p.Update)+len(p.Remove) == 0 }

func planPeers(desired []Peer, actual map[netip.Addr]Peer) peerPlan {
	var p peerPlan
	want := make(map[netip.Addr]struct{}, len(desired))
	for _, d := range desired {
		want[d.Address] = struct{}{}
		cur, ok := actual[d.Address]
		switch {
		case !ok:
			p.Add = append(p.Add, d)
		case !equalPeer(cur, d):
			p.Update = append(p.Update, d)
		}
	}
	for a := range actual {
		if _, ok := want[a]; !ok {
			p.Remove = append(p.Remove, a)
		}
	}
	slices.SortFunc(p.Remove, func(a, b netip.Addr) int { return a.Compare(b) })
	return p
}

// needsRestart reports whether going from cur to want needs a new GoBGP
// server: GoBGP cannot change its ASN, router ID or listeners live.
func needsRestart(cur *Global, want Global) bool {
	if cur == nil {
		return true
	}
	return cur.ASN != want.ASN || cur.RouterID != want.RouterID || cur.ListenPort != want.ListenPort ||
		!slices.Equal(cur.ListenAddresses, want.ListenAddresses)
}

// samePrefixes compares two allowed-prefix lists as sets.
func samePrefixes(a, b []netip.Prefix) bool {
	return slices.Equal(sortedPrefixes(a), sortedPrefixes(b))
}

func sortedPrefixes(p []netip.Prefix) []netip.Prefix {
	p = slices.Clone(p)
	slices.SortFunc(p, comparePrefix)
	return slices.Compact(p)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// withGracefulShutdown returns the routes with GRACEFUL_SHUTDOWN added
// (RFC 8326): receivers lower the local preference so traffic moves away
// before the withdrawal.
func withGracefulShutdown(routes []Route) []Route {
	out := make([]Route, len(routes))
	for i, r := range routes {
		if !slices.Contains(r.Communities, GracefulShutdown) {
			r.Communities = append(slices.Clone(r.Communities), GracefulShutdown)
		}
		out[i] = r
	}
	return out
}
