package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"go.uber.org/zap"
)

// Speaker is an in-process GoBGP server driven by desired state. All methods
// are safe for concurrent use; Apply, GracefulShutdown and Stop are
// serialised.
type Speaker struct {
	log *zap.Logger

	mu          sync.Mutex // guards the fields below
	srv         *server.BgpServer
	watchCancel context.CancelFunc
	global      *Global // nil = not running
	guard       exportGuard
	policySet   bool
	peers       map[netip.Addr]Peer    // as configured in GoBGP
	routes      map[netip.Prefix]Route // as advertised (GRACEFUL_SHUTDOWN included while draining)
	draining    bool

	obs *observer
}

// New returns a stopped speaker; the first Apply starts it.
func New(log *zap.Logger) *Speaker {
	if log == nil {
		log = zap.NewNop()
	}
	return &Speaker{
		log:    log,
		peers:  map[netip.Addr]Peer{},
		routes: map[netip.Prefix]Route{},
		obs:    newObserver(),
	}
}

// Subscribe registers fn for peer state changes: BGP session states (from
// GoBGP's peer watch) and BFD states (from GoBGP's BFD API, polled every
// 20 ms: v4.8 has no BFD watch). fn runs on one of the speaker's watch
// goroutines, one at a time per source: it must not block (hand the event
// to a channel or queue).
func (s *Speaker) Subscribe(fn func(PeerEvent)) { s.obs.subscribe(fn) }

func validate(d Desired) error {
	g := d.Global
	if g.ASN == 0 {
		return errors.New("global: ASN 0")
	}
	if !g.RouterID.Is4() {
		return fmt.Errorf("global: router ID %v is not an IPv4 address", g.RouterID)
	}
	if g.ListenPort < -1 || g.ListenPort > 65535 {
		return fmt.Errorf("global: listen port %d out of range", g.ListenPort)
	}
	for _, a := range d.AllowedPrefixes {
		if !a.IsValid() || a.Masked() != a {
			return fmt.Errorf("allowed prefix %v: not a valid masked prefix", a)
		}
	}
	seen := map[netip.Addr]bool{}
	for _, p := range d.Peers {
		switch {
		case !p.Address.IsValid():
			return errors.New("peer with no address")
		case p.ASN == 0:
			return fmt.Errorf("peer %s: ASN 0", p.Address)
		case seen[p.Address]:
			return fmt.Errorf("peer %s: listed twice", p.Address)
		case p.HoldTime != 0 && p.HoldTime < 3*time.Second:
			return fmt.Errorf("peer %s: hold time %s below 3s (RFC 4271)", p.Address, p.HoldTime)
		}
		if err := validateBFD(p); err != nil {
			return err
		}
		seen[p.Address] = true
	}
	return nil
}

const (
	minBFDInterval = 10 * time.Millisecond
	maxBFDInterval = 60 * time.Second
)

// validateBFD refuses BFD timers outside 10 ms–60 s (zero = default) and
// BFD on a multihop session: GoBGP v4.8 runs single-hop BFD only (RFC 5881,
// TTL 255), which a router would never accept across a hop.
func validateBFD(p Peer) error {
	b := p.BFD
	if b == nil {
		return nil
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"BFD.MinRx", b.MinRx}, {"BFD.MinTx", b.MinTx}} {
		if f.v != 0 && (f.v < minBFDInterval || f.v > maxBFDInterval) {
			return fmt.Errorf("peer %s: %s %s outside %s–%s", p.Address, f.name, f.v, minBFDInterval, maxBFDInterval)
		}
		if f.v%time.Microsecond != 0 {
			return fmt.Errorf("peer %s: %s %s is not a whole number of microseconds", p.Address, f.name, f.v)
		}
	}
	if p.EBGPMultihopTTL > 1 {
		return fmt.Errorf("peer %s: BFD with EBGPMultihopTTL %d: only single-hop BFD is supported", p.Address, p.EBGPMultihopTTL)
	}
	return nil
}

// Apply makes the speaker match d with the fewest changes: only peers that
// differ are added, reset or removed, only paths that differ are advertised
// or withdrawn; re-applying the same state sends nothing. A change of ASN,
// router ID or listener restarts the GoBGP server (sessions flap).
//
// Routes the export guard refuses are reported in ApplyReport.Refused and
// make Apply return an error wrapping ErrRouteRefused, after the valid routes
// were applied. Any other error means the state may be partly applied; the
// next Apply continues from what is actually there.
func (s *Speaker) Apply(ctx context.Context, d Desired) (ApplyReport, error) {
	var rep ApplyReport
	if err := validate(d); err != nil {
		return rep, fmt.Errorf("apply: invalid desired state: %w", err)
	}
	guard := exportGuard{allowed: sortedPrefixes(d.AllowedPrefixes)}
	routes, refused := guard.filter(d.Routes)
	rep.Refused = refused
	for _, r := range refused {
		s.log.Warn("route refused", zap.String("event", "routeRefused"), zap.Stringer("prefix", r.Prefix), zap.String("reason", r.Reason))
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		routes = withGracefulShutdown(routes)
	}

	restarted := false
	if needsRestart(s.global, d.Global) {
		if err := s.restartLocked(ctx, d.Global); err != nil {
			return rep, err
		}
		rep.Restarted = true
		restarted = true
	}

	actualPeers, err := s.readPeersLocked(ctx)
	if err != nil {
		return rep, err
	}
	actualRoutes, err := s.readRoutesLocked(ctx)
	if err != nil {
		return rep, err
	}
	rp := planRoutes(routes, actualRoutes)
	pp := planPeers(d.Peers, actualPeers)

	// Withdraw first, before a shrinking allowed set could leave a route
	// advertised that the new guard refuses.
	if err := s.deletePathsLocked(ctx, rp.Withdraw); err != nil {
		return rep, err
	}
	for _, r := range rp.Withdraw {
		rep.RoutesWithdrawn = append(rep.RoutesWithdrawn, r.Prefix)
	}

	if !s.policySet || !samePrefixes(s.guard.allowed, guard.allowed) {
		req := policies(guard.allowed)
		if err := s.srv.SetPolicies(ctx, req); err != nil {
			return rep, fmt.Errorf("apply: set export/import policies: %w", err)
		}
		// SetPolicies ignores assignments but keeps the existing ones across
		// the swap: assign once per server.
		if !s.policySet {
			for _, a := range req.Assignments {
				if err := s.srv.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: a}); err != nil {
					return rep, fmt.Errorf("apply: assign %s policy to %s: %w", a.Direction, a.Name, err)
				}
			}
		}
		s.policySet = true
		rep.PoliciesChanged = true
	}
	s.guard = guard

	for _, a := range pp.Remove {
		if err := s.deletePeerLocked(ctx, a); err != nil {
			return rep, err
		}
		rep.PeersRemoved = append(rep.PeersRemoved, a)
	}
	for _, p := range pp.Update {
		if err := s.deletePeerLocked(ctx, p.Address); err != nil {
			return rep, err
		}
		if err := s.addPeerLocked(ctx, p, false); err != nil {
			return rep, err
		}
		rep.PeersUpdated = append(rep.PeersUpdated, p.Address)
	}
	for _, p := range pp.Add {
		// Peers configured right after our (re)start announce it (RFC 4724
		// R and F bits): routers that kept our routes as stale keep them
		// until we sent End-of-RIB.
		if err := s.addPeerLocked(ctx, p, restarted); err != nil {
			return rep, err
		}
		rep.PeersAdded = append(rep.PeersAdded, p.Address)
	}

	if err := s.addPathsLocked(ctx, rp.Add); err != nil {
		return rep, err
	}
	for _, r := range rp.Add {
		rep.RoutesAdded = append(rep.RoutesAdded, r.Prefix)
	}
	if err := s.addPathsLocked(ctx, rp.Update); err != nil {
		return rep, err
	}
	for _, r := range rp.Update {
		rep.RoutesUpdated = append(rep.RoutesUpdated, r.Prefix)
	}
	if rep.Changed() {
		s.log.Info("applied",
			zap.String("event", "applied"),
			zap.Bool("restarted", rep.Restarted),
			zap.Int("peersAdded", len(rep.PeersAdded)), zap.Int("peersUpdated", len(rep.PeersUpdated)), zap.Int("peersRemoved", len(rep.PeersRemoved)),
			zap.Int("routesAdded", len(rep.RoutesAdded)), zap.Int("routesUpdated", len(rep.RoutesUpdated)), zap.Int("routesWithdrawn", len(rep.RoutesWithdrawn)),
			zap.Int("routesRefused", len(rep.Refused)))
	}
	return rep, refusedError(refused)
}

// restartLocked stops the current GoBGP server, if any, and starts a new one.
func (s *Speaker) restartLocked(ctx context.Context, g Global) error {
	if s.srv != nil {
		s.log.Info("restarting BGP server", zap.String("event", "serverRestart"), zap.Uint32("asn", g.ASN), zap.Stringer("routerID", g.RouterID))
		s.stopLocked()
	}
	srv := server.NewBgpServer(server.LoggerOption(slog.New(newZapHandler(s.log.Named("gobgp"), s.obs.onLog)), nil))
	go srv.Serve()
	port := g.ListenPort
	if port == 0 {
		port = 179
	}
	var listen []string
	for _, a := range g.ListenAddresses {
		listen = append(listen, a.String())
	}
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             g.ASN,
		RouterId:        g.RouterID.String(),
		ListenPort:      port,
		ListenAddresses: listen,
	}}); err != nil {
		srv.Stop()
		return fmt.Errorf("start BGP server (ASN %d, router ID %s, port %d): %w", g.ASN, g.RouterID, port, err)
	}
	// The watches outlive Apply's context: they end with the server.
	wctx, cancel := context.WithCancel(context.Background())
	if err := srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: s.obs.onWatch}, server.WatchPeer()); err != nil {
		cancel()
		srv.Stop()
		return fmt.Errorf("watch BGP peer events: %w", err)
	}
	go s.obs.watchBFD(wctx, srv)
	s.srv, s.watchCancel = srv, cancel
	gc := g
	gc.ListenAddresses = slices.Clone(g.ListenAddresses)
	s.global = &gc
	s.peers = map[netip.Addr]Peer{}
	s.routes = map[netip.Prefix]Route{}
	s.policySet = false
	s.log.Info("BGP server started", zap.String("event", "serverStarted"), zap.Uint32("asn", g.ASN), zap.Stringer("routerID", g.RouterID), zap.Int32("listenPort", g.ListenPort))
	return nil
}

func (s *Speaker) stopLocked() {
	if s.srv == nil {
		return
	}
	s.watchCancel()
	// Stop sends CEASE to every peer and closes the listeners.
	s.srv.Stop()
	s.srv, s.watchCancel, s.global = nil, nil, nil
	s.peers = map[netip.Addr]Peer{}
	s.routes = map[netip.Prefix]Route{}
	s.policySet = false
	s.draining = false
	s.obs.reset()
}

// readPeersLocked returns the peers GoBGP has, with the parameters we gave
// them. A peer GoBGP lost (or one we never configured) shows as absent or
// unknown so that the plan re-adds or removes it.
func (s *Speaker) readPeersLocked(ctx context.Context) (map[netip.Addr]Peer, error) {
	actual := map[netip.Addr]Peer{}
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		if cfg, ok := s.peers[a]; ok {
			actual[a] = cfg
		} else {
			actual[a] = Peer{Address: a} // unknown to us: differs from any desired peer
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list BGP peers: %w", err)
	}
	return actual, nil
}

// readRoutesLocked returns the locally originated routes GoBGP has, with the
// attributes we gave them.
func (s *Speaker) readRoutesLocked(ctx context.Context) (map[netip.Prefix]Route, error) {
	actual := make(map[netip.Prefix]Route, len(s.routes))
	for _, f := range families {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f}, func(n bgppkt.NLRI, paths []*apiutil.Path) {
			pfx, err := netip.ParsePrefix(n.String())
			if err != nil {
				return
			}
			for _, p := range paths {
				if a := p.PeerAddress; a.IsValid() && !a.IsUnspecified() {
					continue // learned from a peer, not ours
				}
				if r, ok := s.routes[pfx]; ok {
					actual[pfx] = r
				}
			}
		})
		if err != nil {
			return nil, fmt.Errorf("list local paths: %w", err)
		}
	}
	// Forget routes GoBGP no longer has, so the record matches reality.
	for pfx := range s.routes {
		if _, ok := actual[pfx]; !ok {
			delete(s.routes, pfx)
		}
	}
	return actual, nil
}

func (s *Speaker) addPeerLocked(ctx context.Context, p Peer, localRestarting bool) error {
	s.obs.forget(p.Address)
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: toAPIPeer(p, localRestarting && p.GracefulRestart)}); err != nil {
		return fmt.Errorf("add BGP peer %s (AS %d): %w", p.Address, p.ASN, err)
	}
	s.peers[p.Address] = p
	s.log.Info("peer added", zap.String("event", "peerAdded"), zap.Stringer("peer", p.Address), zap.Uint32("peerASN", p.ASN))
	return nil
}

func (s *Speaker) deletePeerLocked(ctx context.Context, a netip.Addr) error {
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
		return fmt.Errorf("delete BGP peer %s: %w", a, err)
	}
	delete(s.peers, a)
	s.obs.forget(a)
	s.log.Info("peer removed", zap.String("event", "peerRemoved"), zap.Stringer("peer", a))
	return nil
}

// pathBatch is how many paths go to GoBGP per call (one management
// operation each): big enough for 10,000 routes to cost a few calls,
// small enough to check the context in between.
const pathBatch = 512

// addPathsLocked advertises routes (or replaces their attributes: GoBGP
// treats a new path for the same prefix as an implicit withdraw).
func (s *Speaker) addPathsLocked(ctx context.Context, routes []Route) error {
	for start := 0; start < len(routes); start += pathBatch {
		if ctx.Err() != nil {
			return fmt.Errorf("add paths: %w", ctx.Err())
		}
		batch := routes[start:min(start+pathBatch, len(routes))]
		paths := make([]*apiutil.Path, len(batch))
		for i, r := range batch {
			// Second check right before the route enters GoBGP; the export
			// policy is the third.
			if why := s.guard.check(r); why != "" {
				return fmt.Errorf("%w: %s: %s (internal: passed the first guard)", ErrRouteRefused, r.Prefix, why)
			}
			p, err := toAPIPath(r, s.global.ASN)
			if err != nil {
				return err
			}
			paths[i] = p
		}
		resps, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: paths})
		for i, r := range batch {
			if i < len(resps) && resps[i].Error != nil {
				return fmt.Errorf("advertise %s: %w", r.Prefix, resps[i].Error)
			}
			if err == nil {
				s.routes[r.Prefix] = r
			}
		}
		if err != nil {
			return fmt.Errorf("advertise %d paths from %s: %w", len(batch), batch[0].Prefix, err)
		}
	}
	return nil
}

// deletePathsLocked withdraws routes by their exact path and family: a
// DeletePath without paths (or with DeleteAll) would withdraw every local
// path (PITFALLS.md).
func (s *Speaker) deletePathsLocked(ctx context.Context, routes []Route) error {
	for start := 0; start < len(routes); start += pathBatch {
		if ctx.Err() != nil {
			return fmt.Errorf("withdraw paths: %w", ctx.Err())
		}
		batch := routes[start:min(start+pathBatch, len(routes))]
		paths := make([]*apiutil.Path, len(batch))
		for i, r := range batch {
			p, err := toAPIPath(r, s.global.ASN)
			if err != nil {
				return err
			}
			paths[i] = p
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: paths}); err != nil {
			return fmt.Errorf("withdraw %d paths from %s: %w", len(batch), batch[0].Prefix, err)
		}
		for _, r := range batch {
			delete(s.routes, r.Prefix)
		}
	}
	return nil
}

// GracefulShutdown drains the speaker (RFC 8326): every route is
// re-advertised with GRACEFUL_SHUTDOWN (65535:0) so routers move traffic
// away, then after wait the routes are withdrawn and the sessions closed.
// The speaker is stopped afterwards; a later Apply starts it again.
func (s *Speaker) GracefulShutdown(ctx context.Context, wait time.Duration) error {
	s.mu.Lock()
	if s.srv == nil {
		s.mu.Unlock()
		return nil
	}
	s.draining = true
	cur := make([]Route, 0, len(s.routes))
	for _, r := range s.routes {
		cur = append(cur, r)
	}
	err := s.addPathsLocked(ctx, withGracefulShutdown(cur))
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("graceful shutdown: re-advertise with GRACEFUL_SHUTDOWN: %w", err)
	}
	s.log.Info("graceful shutdown: draining", zap.String("event", "drainStarted"), zap.Int("routes", len(cur)), zap.Duration("wait", wait))

	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	all := make([]Route, 0, len(s.routes))
	for _, r := range s.routes {
		all = append(all, r)
	}
	// Withdraw even if ctx ended: a drain must not leave routes behind.
	if err := s.deletePathsLocked(context.WithoutCancel(ctx), all); err != nil {
		return fmt.Errorf("graceful shutdown: withdraw: %w", err)
	}
	s.waitOutQueuesLocked(2 * time.Second)
	s.stopLocked()
	s.log.Info("graceful shutdown: done", zap.String("event", "drainDone"), zap.Int("withdrawn", len(all)))
	return ctx.Err()
}

// waitOutQueuesLocked gives the withdrawals time to leave before the
// sessions close (GoBGP does not flush on CEASE by itself).
func (s *Speaker) waitOutQueuesLocked(max time.Duration) {
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		pending := false
		_ = s.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.GetState().GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED && p.GetState().GetOutQ() > 0 {
				pending = true
			}
		})
		if !pending {
			time.Sleep(100 * time.Millisecond) // the socket write itself
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop closes every session (CEASE: routers withdraw our routes, including
// with graceful restart) and stops the server. For a hitless restart, let
// the process exit without Stop so that peers run graceful restart.
func (s *Speaker) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
	return ctx.Err()
}
