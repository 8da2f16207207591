package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"go.uber.org/zap/zapcore"
)

// peerObs is what GoBGP's API does not keep: when the state was entered,
// whether the session ever came up, and why it last went down.
type peerObs struct {
	state     SessionState
	since     time.Time
	ever      bool
	lastError string
}

// observer collects peer events (watch goroutine) and errors (log hook).
type observer struct {
	mu    sync.Mutex
	peers map[netip.Addr]*peerObs
	subs  []func(PeerEvent)
}

func newObserver() *observer { return &observer{peers: map[netip.Addr]*peerObs{}} }

func (o *observer) subscribe(fn func(PeerEvent)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.subs = append(o.subs, fn)
}

func (o *observer) getLocked(a netip.Addr) *peerObs {
	p := o.peers[a]
	if p == nil {
		p = &peerObs{state: StateIdle, since: time.Now()}
		o.peers[a] = p
	}
	return p
}

func (o *observer) forget(a netip.Addr) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.peers, a)
}

func (o *observer) reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.peers = map[netip.Addr]*peerObs{}
}

func (o *observer) onWatch(r *api.WatchEventResponse) {
	pe := r.GetPeer()
	if pe == nil || pe.Type != api.WatchEventResponse_PeerEvent_STATE {
		return
	}
	a, err := netip.ParseAddr(pe.GetPeer().GetState().GetNeighborAddress())
	if err != nil {
		a, err = netip.ParseAddr(pe.GetPeer().GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
	}
	st := sessionState(pe.GetPeer().GetState().GetSessionState())
	now := time.Now()
	o.mu.Lock()
	p := o.getLocked(a)
	changed := p.state != st
	if changed {
		p.state, p.since = st, now
		if st == StateEstablished {
			p.ever = true
		}
	}
	subs := slices.Clone(o.subs)
	o.mu.Unlock()
	if !changed {
		return
	}
	ev := PeerEvent{Address: a, State: st, Time: now}
	for _, fn := range subs {
		fn(ev)
	}
}

// onLog records why a session failed from GoBGP's peer log messages, the
// only place GoBGP reports it.
func (o *observer) onLog(level zapcore.Level, a netip.Addr, msg string, f gobgplog.Fields) {
	var why string
	switch {
	case msg == "Peer Down":
		why = fmt.Sprint(f["Reason"])
	case msg == "prefix limit reached" && f["Pct"] == nil:
		why = fmt.Sprintf("maximum number of prefixes reached (%v)", f["Family"])
	case msg == "failed to connect":
		why = fmt.Sprintf("connect: %v", f["Error"])
	case level >= zapcore.WarnLevel:
		why = msg
		if e, ok := f["Error"]; ok {
			why += ": " + fmt.Sprint(e)
		}
	default:
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.getLocked(a)
	// A max-prefix teardown is logged twice (the limit, then "Peer Down ...
	// notification-sent ..."): keep the more telling first one.
	if msg == "Peer Down" && strings.HasPrefix(p.lastError, "maximum number of prefixes") && strings.Contains(why, "prefixes") {
		return
	}
	p.lastError = why
}

// Status reports every configured peer as GoBGP sees it now.
func (s *Speaker) Status(ctx context.Context) (Status, error) {
	s.mu.Lock()
	srv := s.srv
	st := Status{Running: srv != nil, Draining: s.draining, RoutesAdvertised: len(s.routes)}
	if s.global != nil {
		st.ASN, st.RouterID = s.global.ASN, s.global.RouterID
	}
	s.mu.Unlock()
	if srv == nil {
		return st, nil
	}
	var peers []*api.Peer
	if err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) { peers = append(peers, p) }); err != nil {
		return st, fmt.Errorf("status: list peers: %w", err)
	}
	for _, p := range peers {
		a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			continue
		}
		ps := PeerStatus{
			Address:     a,
			ASN:         p.GetConf().GetPeerAsn(),
			Description: p.GetConf().GetDescription(),
			State:       sessionState(p.GetState().GetSessionState()),
		}
		if m := p.GetState().GetMessages(); m != nil {
			ps.UpdatesSent = m.GetSent().GetUpdate()
			ps.UpdatesReceived = m.GetReceived().GetUpdate()
		}
		if ps.State == StateEstablished {
			if up := p.GetTimers().GetState().GetUptime(); up != nil {
				ps.Uptime = time.Since(up.AsTime()).Round(time.Second)
			}
		}
		for _, af := range p.GetAfiSafis() {
			ps.RoutesSent += af.GetState().GetAdvertised()
			ps.RoutesReceived += af.GetState().GetReceived()
		}
		if ps.RoutesReceived > 0 {
			n, err := countFiltered(ctx, srv, a)
			if err != nil {
				return st, err
			}
			ps.RoutesReceivedRejected = n
		}
		s.obs.mu.Lock()
		if o := s.obs.peers[a]; o != nil {
			ps.Since, ps.EverEstablished, ps.LastError = o.since, o.ever, o.lastError
		}
		s.obs.mu.Unlock()
		if ps.State == StateEstablished {
			ps.EverEstablished = true
		}
		if !ps.EverEstablished && ps.LastError == "" {
			ps.LastError = "never established (check address, ASN, port and TCP MD5 password)"
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return st, nil
}

// countFiltered counts the paths received from a peer that our import
// policy rejects (all of them, by design: the gateway learns nothing).
func countFiltered(ctx context.Context, srv interface {
	ListPath(context.Context, *api.ListPathRequest, func(*api.Destination)) error
}, a netip.Addr) (uint64, error) {
	var n uint64
	for _, f := range []*api.Family{familyV4, familyV6} {
		err := srv.ListPath(ctx, &api.ListPathRequest{TableType: api.TableType_ADJ_IN, Name: a.String(), Family: f, EnableFiltered: true, EnableOnlyBinary: true},
			func(d *api.Destination) {
				for _, p := range d.Paths {
					if p.Filtered {
						n++
					}
				}
			})
		if err != nil {
			return 0, fmt.Errorf("status: list paths received from %s: %w", a, err)
		}
	}
	return n, nil
}
