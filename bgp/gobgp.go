package bgp

import (
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// families are the address families every session carries, as the v4
// library's native (apiutil) calls want them.
var families = []bgppkt.Family{bgppkt.RF_IPv4_UC, bgppkt.RF_IPv6_UC}

func familyOf(p netip.Prefix) bgppkt.Family {
	if p.Addr().Is4() {
		return bgppkt.RF_IPv4_UC
	}
	return bgppkt.RF_IPv6_UC
}

// idleHoldAfterReset replaces GoBGP's 30 s default wait before it
// reconnects a session it reset itself. A BFD-down reset is one (GoBGP
// sends Cease/Administrative Reset): with the default a session whose link
// came back would stay down for half a minute. GoBGP takes whole seconds
// and treats 0 as "use the default", so 1 s is the smallest value.
const idleHoldAfterReset = 1 // seconds

// bfdPort is RFC 5881's single-hop BFD control port.
const bfdPort = 3784

func seconds(d time.Duration) uint64 { return uint64(d / time.Second) }

// toAPIPeer converts a Peer. localRestarting announces the Restart State and
// Forwarding State bits (RFC 4724): set on the first session after our own
// restart so that the router keeps our stale routes until our End-of-RIB.
func toAPIPeer(p Peer, localRestarting bool) *api.Peer {
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
			Description:     p.Description,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:          seconds(p.HoldTime),
			KeepaliveInterval: seconds(p.Keepalive),
			ConnectRetry:      seconds(p.ConnectRetry),
			// GoBGP only applies it after it sent Cease/Administrative
			// Reset (BFD down, or our own reset).
			IdleHoldTimeAfterReset: idleHoldAfterReset,
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
	}
	if p.EBGPMultihopTTL > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.EBGPMultihopTTL)}
	}
	if p.BFD != nil {
		b := p.BFD.withDefaults()
		ap.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			Port:                     bfdPort,
			DesiredMinimumTxInterval: uint32(b.MinTx / time.Microsecond),
			RequiredMinimumReceive:   uint32(b.MinRx / time.Microsecond),
			DetectionMultiplier:      uint32(b.Multiplier),
		}
	}
	if p.GracefulRestart {
		rt := seconds(p.RestartTime)
		if rt == 0 {
			rt = 120
		}
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(rt),
			LocalRestarting: localRestarting,
		}
	}
	for _, f := range []*api.Family{familyV4, familyV6} {
		as := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		// Without the per-family flag GoBGP silently advertises no
		// graceful-restart tuple (PITFALLS.md).
		if p.GracefulRestart {
			as.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		if p.MaxPrefixes > 0 {
			as.PrefixLimits = &api.PrefixLimit{Family: f, MaxPrefixes: p.MaxPrefixes}
		}
		ap.AfiSafis = append(ap.AfiSafis, as)
	}
	return ap
}

// toAPIPath builds the locally originated path for r.
func toAPIPath(r Route, localASN uint32) (*apiutil.Path, error) {
	fam := familyOf(r.Prefix)
	nlri, err := bgppkt.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, fmt.Errorf("encode prefix %s: %w", r.Prefix, err)
	}
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if fam == bgppkt.RF_IPv4_UC {
		nh := netip.IPv4Unspecified() // "my address toward each peer"
		if r.NextHop.IsValid() {
			nh = r.NextHop
		}
		a, err := bgppkt.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, fmt.Errorf("encode next hop %s of %s: %w", nh, r.Prefix, err)
		}
		attrs = append(attrs, a)
	} else {
		nh := netip.IPv6Unspecified()
		if r.NextHop.IsValid() {
			nh = r.NextHop
		}
		a, err := bgppkt.NewPathAttributeMpReachNLRI(fam, []bgppkt.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, fmt.Errorf("encode next hop %s of %s: %w", nh, r.Prefix, err)
		}
		attrs = append(attrs, a)
	}
	if r.ASPathPrepend > 0 {
		asns := make([]uint32, r.ASPathPrepend)
		for i := range asns {
			asns[i] = localASN
		}
		attrs = append(attrs, bgppkt.NewPathAttributeAsPath([]bgppkt.AsPathParamInterface{
			bgppkt.NewAs4PathParam(bgppkt.BGP_ASPATH_ATTR_TYPE_SEQ, asns)}))
	}
	if r.MED != nil {
		attrs = append(attrs, bgppkt.NewPathAttributeMultiExitDisc(*r.MED))
	}
	if r.LocalPref != 0 {
		attrs = append(attrs, bgppkt.NewPathAttributeLocalPref(r.LocalPref))
	}
	if cs := sortedCommunities(r.Communities); len(cs) > 0 {
		v := make([]uint32, len(cs))
		for i, c := range cs {
			v[i] = uint32(c)
		}
		attrs = append(attrs, bgppkt.NewPathAttributeCommunities(v))
	}
	if ls := sortedLarge(r.LargeCommunities); len(ls) > 0 {
		v := make([]*bgppkt.LargeCommunity, len(ls))
		for i, c := range ls {
			v[i] = bgppkt.NewLargeCommunity(c.Global, c.Local1, c.Local2)
		}
		attrs = append(attrs, bgppkt.NewPathAttributeLargeCommunities(v))
	}
	// Family must be set: v4 refuses a path without one.
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, Age: time.Now().Unix()}, nil
}

const (
	policyExport  = "nb-export-guard"
	policyImport  = "nb-import-reject"
	prefixSetV4   = "nb-allowed-v4"
	prefixSetV6   = "nb-allowed-v6"
	globalPolicer = "global"
)

// policies builds the whole routing policy in one request (SetPolicies swaps
// sets and policies atomically, so there is no window without the export
// guard; the assignments are added once, see Apply):
//   - export: accept prefixes inside the allowed ones (mask up to /32, /128),
//     default reject;
//   - import: accept our own (local) routes, default reject. A global import
//     policy also sees locally originated routes, hence the first statement.
func policies(allowed []netip.Prefix) *api.SetPoliciesRequest {
	var v4, v6 []*api.Prefix
	for _, a := range allowed {
		max := uint32(32)
		if a.Addr().Is6() {
			max = 128
		}
		ap := &api.Prefix{IpPrefix: a.String(), MaskLengthMin: uint32(a.Bits()), MaskLengthMax: max}
		if a.Addr().Is4() {
			v4 = append(v4, ap)
		} else {
			v6 = append(v6, ap)
		}
	}
	req := &api.SetPoliciesRequest{}
	export := &api.Policy{Name: policyExport}
	// GoBGP prefix sets hold one family each; an empty set is left out (it
	// would match nothing anyway, and default reject covers it).
	for _, s := range []struct {
		name     string
		prefixes []*api.Prefix
	}{{prefixSetV4, v4}, {prefixSetV6, v6}} {
		if len(s.prefixes) == 0 {
			continue
		}
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: s.name, Prefixes: s.prefixes})
		export.Statements = append(export.Statements, &api.Statement{
			Name:       "accept-" + s.name,
			Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: s.name}},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
		})
	}
	if len(export.Statements) == 0 {
		// A policy needs a statement; this one matches nothing we send.
		export.Statements = append(export.Statements, &api.Statement{
			Name:    "reject-all",
			Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
		})
	}
	imp := &api.Policy{Name: policyImport, Statements: []*api.Statement{{
		Name:       "accept-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}}
	req.Policies = []*api.Policy{export, imp}
	req.Assignments = []*api.PolicyAssignment{
		{Name: globalPolicer, Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT, Policies: []*api.Policy{{Name: policyExport}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT},
		{Name: globalPolicer, Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, Policies: []*api.Policy{{Name: policyImport}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT},
	}
	return req
}

func sessionState(s api.PeerState_SessionState) SessionState {
	switch s {
	case api.PeerState_SESSION_STATE_IDLE:
		return StateIdle
	case api.PeerState_SESSION_STATE_CONNECT:
		return StateConnect
	case api.PeerState_SESSION_STATE_ACTIVE:
		return StateActive
	case api.PeerState_SESSION_STATE_OPENSENT:
		return StateOpenSent
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return StateOpenConfirm
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return StateEstablished
	}
	return StateUnknown
}

// fsmState converts the native state of v4's watch events.
func fsmState(s bgppkt.FSMState) SessionState {
	switch s {
	case bgppkt.BGP_FSM_IDLE:
		return StateIdle
	case bgppkt.BGP_FSM_CONNECT:
		return StateConnect
	case bgppkt.BGP_FSM_ACTIVE:
		return StateActive
	case bgppkt.BGP_FSM_OPENSENT:
		return StateOpenSent
	case bgppkt.BGP_FSM_OPENCONFIRM:
		return StateOpenConfirm
	case bgppkt.BGP_FSM_ESTABLISHED:
		return StateEstablished
	}
	return StateUnknown
}

// bfdState names GoBGP's BFD session state.
func bfdState(s api.BfdSessionState) string {
	switch s {
	case api.BfdSessionState_BFD_SESSION_STATE_DOWN:
		return BFDDown
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return BFDInit
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return BFDUp
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return BFDAdminDown
	}
	return ""
}
