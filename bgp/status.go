package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"go.uber.org/zap/zapcore"
)

// peerObs is what GoBGP's API does not keep: when the state was entered,
// whether the session ever came up, and why it last went down.
type peerObs struct {
	state     SessionState
	since     time.Time
	ever      bool
	lastError string
	// maxPrefix is set when the session was torn down for exceeding the
	// prefix limit, until it is Established again.
	maxPrefix bool
	// From GoBGP's peer events and BFD API: BFD state, BFD leaving Up,
	// the session leaving Established, GoBGP's last disconnect reason.
	bfd            string
	bfdDowns       uint64
	resets         uint64
	lastDisconnect string
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

// onWatch handles one of GoBGP's peer events (the watch goroutine).
func (o *observer) onWatch(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev == nil || ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	a := ev.Peer.State.NeighborAddress
	if !a.IsValid() {
		a = ev.Peer.Conf.NeighborAddress
	}
	if !a.IsValid() {
		return
	}
	a = a.Unmap()
	st := fsmState(ev.Peer.State.SessionState)
	now := time.Now()
	o.mu.Lock()
	p := o.getLocked(a)
	changed := p.state != st
	reason := ""
	if changed {
		if p.state == StateEstablished {
			p.resets++
			reason = disconnectReason(ev.Peer.State.DisconnectReason, ev.Peer.State.DisconnectMessage)
			if reason != "" {
				p.lastDisconnect = reason
			}
		}
		p.state, p.since = st, now
		if st == StateEstablished {
			p.ever = true
			p.maxPrefix = false
		}
	}
	bfd := p.bfd
	subs := slices.Clone(o.subs)
	o.mu.Unlock()
	if !changed {
		return
	}
	ev2 := PeerEvent{Address: a, State: st, Time: now, BFDState: bfd, Reason: reason}
	for _, fn := range subs {
		fn(ev2)
	}
}

// disconnectReason is GoBGP's message ("notification-received cease/admin
// reset"), or the reason's name when there is no message.
func disconnectReason(r api.PeerState_DisconnectReason, msg string) string {
	if msg != "" {
		return msg
	}
	if r == api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "DISCONNECT_REASON_"))
}

// onBFD records a BFD state read from GoBGP's BFD API and reports a change.
func (o *observer) onBFD(a netip.Addr, state string) {
	now := time.Now()
	o.mu.Lock()
	p := o.getLocked(a)
	if p.bfd == state {
		o.mu.Unlock()
		return
	}
	if p.bfd == BFDUp {
		p.bfdDowns++
	}
	p.bfd = state
	ev := PeerEvent{Address: a, State: p.state, Time: now, BFD: true, BFDState: state}
	subs := slices.Clone(o.subs)
	o.mu.Unlock()
	for _, fn := range subs {
		fn(ev)
	}
}

// bfdAPI is the part of GoBGP's API the BFD watcher uses.
type bfdAPI interface {
	ListBfdPeer(ctx context.Context, fn func(string, *api.BfdPeerState))
}

// bfdPollInterval: GoBGP v4.8 has no BFD event in WatchEvent, only
// ListBfdPeer; polling it this often sees every state a session holds for
// longer than that (a down lasts at least one transmit interval of the
// router, and BGP's own reset follows as a watch event anyway).
const bfdPollInterval = 20 * time.Millisecond

// watchBFD polls GoBGP's BFD sessions until ctx ends and feeds their
// states to the observer.
func (o *observer) watchBFD(ctx context.Context, srv bfdAPI) {
	t := time.NewTicker(bfdPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		srv.ListBfdPeer(ctx, func(addr string, st *api.BfdPeerState) {
			if a, err := netip.ParseAddr(addr); err == nil {
				o.onBFD(a.Unmap(), bfdState(st.GetSessionState()))
			}
		})
	}
}

// onLog records why a session failed from GoBGP's peer log messages, the
// only place GoBGP reports it.
func (o *observer) onLog(level zapcore.Level, a netip.Addr, msg string, f logFields) {
	var why string
	switch {
	case msg == "Peer Down":
		why = fmt.Sprint(f["Reason"])
	case msg == "prefix limit reached":
		if f["Pct"] != nil {
			return // only the warning threshold, the session stays up
		}
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
	switch {
	case strings.HasPrefix(why, "maximum number of prefixes"):
		p.maxPrefix = true
		p.lastError = why
	case msg == "Peer Down" && p.maxPrefix:
		// The teardown that follows the limit (reason notification-sent,
		// or read-failed when the router closes first): keep the cause.
		if !strings.Contains(why, "prefixes") {
			p.lastError = strings.SplitN(p.lastError, ";", 2)[0] + "; then " + why
		}
	case p.maxPrefix:
		// e.g. "sent notification": part of the same teardown.
	default:
		p.lastError = why
	}
}

// inRIB counts, per neighbour, the paths learned from it that made it into
// our RIB. Received minus that is what we rejected: by the import policy,
// or as an AS-path loop (routers echo our own routes back).
func inRIB(srv interface {
	ListPath(apiutil.ListPathRequest, func(bgppkt.NLRI, []*apiutil.Path)) error
}) (map[netip.Addr]uint64, error) {
	n := map[netip.Addr]uint64{}
	for _, f := range families {
		err := srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: f},
			func(_ bgppkt.NLRI, paths []*apiutil.Path) {
				for _, p := range paths {
					if a := p.PeerAddress; a.IsValid() && !a.IsUnspecified() {
						n[a.Unmap()]++
					}
				}
			})
		if err != nil {
			return nil, fmt.Errorf("status: list RIB: %w", err)
		}
	}
	return n, nil
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
	bfd := map[netip.Addr]string{}
	srv.ListBfdPeer(ctx, func(addr string, st *api.BfdPeerState) {
		if a, err := netip.ParseAddr(addr); err == nil {
			bfd[a.Unmap()] = bfdState(st.GetSessionState())
		}
	})
	var learned map[netip.Addr]uint64 // computed once, only if something was received
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
			adv := af.GetState().GetAdvertised()
			// GoBGP counts the End-of-RIB marker it owes a graceful-restart
			// peer as one advertised path per family: not a route.
			if p.GetGracefulRestart().GetEnabled() && adv > 0 {
				adv--
			}
			ps.RoutesSent += adv
			ps.RoutesReceived += af.GetState().GetReceived()
		}
		if ps.RoutesReceived > 0 {
			if learned == nil {
				if learned, err = inRIB(srv); err != nil {
					return st, err
				}
			}
			ps.RoutesReceivedRejected = ps.RoutesReceived - min(ps.RoutesReceived, learned[a])
		}
		s.obs.mu.Lock()
		if o := s.obs.peers[a]; o != nil {
			ps.Since, ps.EverEstablished, ps.LastError, ps.PrefixLimitExceeded = o.since, o.ever, o.lastError, o.maxPrefix
			ps.BFDDownTransitions, ps.SessionResets, ps.LastDisconnect = o.bfdDowns, o.resets, o.lastDisconnect
		}
		ps.BFDState = bfd[a]
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
