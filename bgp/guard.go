package bgp

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrRouteRefused is wrapped by the error Apply returns when it refused
// routes (outside the allowed prefixes, or malformed). The other routes of
// the same Apply were applied.
var ErrRouteRefused = errors.New("route refused")

// exportGuard decides which prefixes may leave the process. It is the first
// of two locks: the second is the GoBGP export policy built from the same
// prefixes (see policy.go).
type exportGuard struct {
	allowed []netip.Prefix
}

// allows reports whether p lies inside one of the allowed prefixes.
func (g exportGuard) allows(p netip.Prefix) bool {
	for _, a := range g.allowed {
		if a.Addr().Is4() == p.Addr().Is4() && a.Bits() <= p.Bits() && a.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// check returns why r may not be advertised, or "" if it may.
func (g exportGuard) check(r Route) string {
	p := r.Prefix
	switch {
	case !p.IsValid():
		return "invalid prefix"
	case p.Addr().Is4In6():
		return "IPv4-mapped IPv6 prefix"
	case p.Masked() != p:
		return fmt.Sprintf("host bits set (did you mean %s?)", p.Masked())
	case !p.IsSingleIP() && !r.Aggregate:
		return "not a host route and Aggregate not set"
	case !g.allows(p):
		return "outside the allowed prefixes"
	case r.NextHop.IsValid() && r.NextHop.Is4() != p.Addr().Is4():
		return fmt.Sprintf("next hop %s is not in the prefix's address family", r.NextHop)
	}
	return ""
}

// filter splits routes into the ones that may be advertised and the refused
// ones. A prefix listed twice is refused the second time (routes are keyed
// by prefix).
func (g exportGuard) filter(routes []Route) (ok []Route, refused []RefusedRoute) {
	seen := make(map[netip.Prefix]bool, len(routes))
	ok = make([]Route, 0, len(routes))
	for _, r := range routes {
		if why := g.check(r); why != "" {
			refused = append(refused, RefusedRoute{Prefix: r.Prefix, Reason: why})
			continue
		}
		if seen[r.Prefix] {
			refused = append(refused, RefusedRoute{Prefix: r.Prefix, Reason: "duplicate prefix"})
			continue
		}
		seen[r.Prefix] = true
		ok = append(ok, r)
	}
	return ok, refused
}

// refusedError names every refused prefix.
func refusedError(refused []RefusedRoute) error {
	if len(refused) == 0 {
		return nil
	}
	errs := make([]error, 0, len(refused))
	for _, r := range refused {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrRouteRefused, r.Prefix, r.Reason))
	}
	return errors.Join(errs...)
}
