// Package peerlink is the direct, authenticated liveness channel between the
// gateways of a segment over the underlay: every gateway sends every
// configured peer a small heartbeat (who it is, what it claims per segment,
// which of the peer's heartbeats it heard) and keeps a view of its peers
// that does not depend on the Kubernetes API server. docs/ha.md says how
// the agent decides with it.
//
// Transport and authentication are hashicorp/memberlist's: its encrypted
// user messages (AES-GCM with the shared key, the label bound as additional
// data). memberlist has no replay protection and no per-node identity, so
// this package adds both: peers are configured by name and address,
// anything else is refused, and a message that is not newer than the last
// accepted one of its sender, or whose send time is too far from our clock,
// is dropped. memberlist's gossip membership is not used (no Join): the
// gateways are configured, and SWIM's indirect probes would call a peer
// alive that we cannot hear ourselves.
//
// Use, in the agent:
//
//	link, err := peerlink.Start(ctx, peerlink.Config{Name: node, BindAddr: vtep, Key: key, Log: log})
//	link.SetPeers(map[string]netip.AddrPort{"gw2": netip.MustParseAddrPort("10.0.0.2:7946")})
//	link.OnChange(func() { reconcileNow() })     // a peer died, came back, or changed its claims
//	link.SetClaims(map[string]peerlink.Claim{"bc.seg1": {Holding: true, Epoch: 7}})
//	until, ok := link.PeerGrant("gw2")            // every heartbeat: the peer rule's deadline
//	view := link.Peers()                           // Alive, AcksMe, Claims per peer
package peerlink

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// Label is memberlist's cluster label of the channel: authenticated with
// every packet, so memberlist traffic of another application that shares
// the key is refused.
const Label = "netbridge-peerlink"

// Stats are the channel's counters since Start (Prometheus counters).
type Stats struct {
	// Sent counts heartbeats handed to the kernel, SendErrors those it refused.
	Sent, SendErrors uint64
	// Accepted counts heartbeats that updated the view.
	Accepted uint64
	// Dropped counts refused packets and messages by reason (the Drop* constants).
	Dropped map[string]uint64
}

// Link is one gateway's end of the peer channel.
type Link struct {
	cfg     Config
	self    netip.AddrPort
	keyring *memberlist.Keyring
	keysMu  sync.Mutex // one keyring change at a time
	// keyHooks (under keysMu) are told every change of the keys (OnKeys).
	keyHooks []func(use []byte, accept [][]byte)
	// Under mu: the key a rotation moves to (nil: none under way) and
	// what the heartbeats say of our keyring.
	target  []byte
	keyView keyState
	log     *zap.Logger
	ml      *memberlist.Memberlist

	mu        sync.Mutex
	tr        *tracker
	claims    map[string]Claim
	callbacks []func()
	stats     Stats
	lastView  map[string]PeerView

	replyTo map[string]bool // peers whose heartbeat awaits our reply
	kick    chan struct{}   // send a heartbeat round now
	reply   chan struct{}   // send the replies in replyTo now
	poke    chan struct{}   // re-evaluate the view now
	notify  chan struct{}   // run the OnChange callbacks
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closeMu sync.Once
	closed  error
}

// Start opens the channel on cfg.BindAddr:cfg.Port and starts sending
// heartbeats (to no one until SetPeers). It stops when ctx ends or Close
// is called.
func Start(ctx context.Context, cfg Config) (*Link, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("peerlink: boot id: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	l := &Link{cfg: cfg, self: netip.AddrPortFrom(cfg.BindAddr, uint16(cfg.Port)),
		log:    cfg.Log.With(zap.String("component", "peerlink")),
		tr:     newTracker(cfg.Name, hex.EncodeToString(b[:]), cfg.DeadAfter, cfg.MaxClockSkew),
		claims: map[string]Claim{}, lastView: map[string]PeerView{},
		stats:   Stats{Dropped: map[string]uint64{}},
		replyTo: map[string]bool{}, reply: make(chan struct{}, 1),
		kick: make(chan struct{}, 1), poke: make(chan struct{}, 1), notify: make(chan struct{}, 1),
		cancel: cancel}

	keyring, err := memberlist.NewKeyring(nil, append([]byte(nil), cfg.Key...))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("peerlink: keyring: %w", err)
	}
	l.keyring = keyring
	l.keyView = keyViewOf(keyring)
	mlog := log.New(&memberlistLog{log: l.log, dropped: l.countDrop}, "", 0)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{cfg.BindAddr.String()}, BindPort: cfg.Port, Logger: mlog})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("peerlink: listen on %s: %w", l.self, err)
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.Transport = newFilterTransport(nt, l.addrAllowed, l.countDrop)
	mc.BindAddr, mc.BindPort = cfg.BindAddr.String(), cfg.Port
	mc.AdvertiseAddr, mc.AdvertisePort = cfg.BindAddr.String(), cfg.Port
	mc.Label = Label
	mc.Keyring = l.keyring
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	// A peer that holds a TCP stream open must not hold memberlist up.
	mc.TCPTimeout = time.Second
	// Heartbeats are small; compression only matters with many segments.
	mc.EnableCompression = true
	hooks := &mlHooks{l: l}
	mc.Delegate, mc.Alive, mc.Merge = hooks, hooks, hooks
	mc.Logger = mlog
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = mc.Transport.Shutdown()
		cancel()
		return nil, fmt.Errorf("peerlink: start memberlist on %s: %w", l.self, err)
	}
	l.ml = ml
	l.log.Info("peer channel up", zap.String("event", "peerlinkStarted"), zap.String("name", cfg.Name),
		zap.Stringer("addr", l.self), zap.Duration("heartbeat", cfg.HeartbeatInterval), zap.Duration("deadAfter", cfg.DeadAfter))

	l.wg.Add(3)
	go l.sendLoop(ctx)
	go l.watchLoop(ctx)
	go l.notifyLoop(ctx)
	go func() {
		<-ctx.Done()
		_ = l.Close()
	}()
	return l, nil
}

// SetPeers replaces the configured peers (name → underlay address and
// port). Only these may change the view; a peer whose address changed is
// treated as new. Invalid input is refused as a whole and the old peers stay.
func (l *Link) SetPeers(peers map[string]netip.AddrPort) error {
	if err := validPeers(l.cfg.Name, l.self, peers); err != nil {
		return err
	}
	l.mu.Lock()
	l.tr.setPeers(peers)
	l.mu.Unlock()
	wake(l.kick)
	wake(l.poke)
	return nil
}

// MaxClaims bounds the claims of one gateway: every heartbeat carries all
// of them (1,000 segments ≈ 8 KB compressed, a handful of IP fragments;
// each lost fragment loses the heartbeat).
const MaxClaims = 2000

// SetClaims replaces this gateway's claims (segment key → claim) and sends
// them to every peer at once, without waiting for the next heartbeat. Too
// many claims, or an empty key, are refused and the old claims stay.
func (l *Link) SetClaims(claims map[string]Claim) error {
	if len(claims) > MaxClaims {
		return fmt.Errorf("peerlink claims: %d segments, at most %d", len(claims), MaxClaims)
	}
	if _, ok := claims[""]; ok {
		return fmt.Errorf("peerlink claims: empty segment key")
	}
	l.mu.Lock()
	l.claims = maps.Clone(claims)
	l.mu.Unlock()
	wake(l.kick)
	return nil
}

// Peers returns a snapshot of every configured peer.
func (l *Link) Peers() map[string]PeerView {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tr.view(time.Now())
}

// PeerGrant returns until when the named peers (a segment's other
// gateway candidates) all hear this gateway: none of them can have called
// it dead before that instant (local monotonic clock). ok is false when
// peers is empty or one of them does not acknowledge us now. This is the
// peer rule's deadline in docs/ha.md; the agent re-reads it every
// heartbeat to refresh the kernel fence.
func (l *Link) PeerGrant(peers ...string) (until time.Time, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tr.peerGrant(peers, time.Now())
}

// OnChange registers fn to run whenever a peer's aliveness, AcksMe or
// claims change. Calls are coalesced and made from one goroutine; fn must
// not block for long (it delays later notifications, never the channel)
// and must not call Close (which waits for that goroutine).
func (l *Link) OnChange(fn func()) {
	l.mu.Lock()
	l.callbacks = append(l.callbacks, fn)
	l.mu.Unlock()
}

// Stats returns the counters.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Dropped = maps.Clone(l.stats.Dropped)
	return s
}

// Close stops the heartbeats and closes the sockets. Peers see this
// gateway dead after their DeadAfter; a gateway that detached first and
// said so (SetClaims without holding) lets a standby attach without
// waiting for that.
func (l *Link) Close() error {
	l.closeMu.Do(func() {
		l.cancel()
		l.wg.Wait()
		l.closed = l.ml.Shutdown()
		l.log.Info("peer channel down", zap.String("event", "peerlinkStopped"))
	})
	return l.closed
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (l *Link) countDrop(reason string) {
	l.mu.Lock()
	l.stats.Dropped[reason]++
	l.mu.Unlock()
}

func (l *Link) addrAllowed(ip netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tr.addrAllowed(ip)
}

func (l *Link) sendLoop(ctx context.Context) {
	defer l.wg.Done()
	tick := time.NewTicker(l.cfg.HeartbeatInterval)
	defer tick.Stop()
	// Rounds and replies leave from this one goroutine: sends from several
	// threads are reordered by the veth's per-CPU queues often enough to
	// waste heartbeats (a receiver drops what is older than it has seen).
	l.sendRound()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			l.sendRound()
		case <-l.kick:
			l.sendRound()
		case <-l.reply:
			l.mu.Lock()
			to := l.replyTo
			l.replyTo = map[string]bool{}
			l.mu.Unlock()
			for name := range to {
				l.send(name, true)
			}
		}
	}
}

// sendRound sends one heartbeat to every configured peer, all with the
// same sequence number.
func (l *Link) sendRound() { l.send("", false) }

// send sends a heartbeat to one peer (only), or to all when only is "".
// A reply acknowledges a heartbeat at once and is not answered itself: a
// peer's ack of our message is then one round trip old instead of up to a
// heartbeat, which leaves DeadAfter the slack for lost datagrams and jitter.
func (l *Link) send(only string, reply bool) {
	now := time.Now()
	l.mu.Lock()
	to := make(map[string]netip.AddrPort, len(l.tr.peers))
	for name, p := range l.tr.peers {
		if only == "" || name == only {
			to[name] = p.addr
		}
	}
	if len(to) == 0 {
		l.mu.Unlock()
		return
	}
	seq := l.tr.beginRound(now)
	m := message{V: wireVersion, From: l.cfg.Name, Addr: l.self.String(), Boot: l.tr.boot, Seq: seq, Reply: reply,
		Sent: now.UnixNano(), DeadAfter: int64(l.cfg.DeadAfter), Claims: maps.Clone(l.claims), Acks: l.tr.acks(),
		Keys: &keyState{Accept: l.keyView.Accept, Use: l.keyView.Use}}
	l.mu.Unlock()

	var sent, failed uint64
	for name, ap := range to {
		m.To = name
		b, err := encodeMessage(m)
		if err == nil {
			err = l.ml.SendToAddress(memberlist.Address{Addr: ap.String(), Name: name}, b)
		}
		if err != nil {
			failed++
			l.log.Debug("heartbeat not sent", zap.String("peer", name), zap.Error(err))
			continue
		}
		sent++
	}
	l.mu.Lock()
	l.stats.Sent += sent
	l.stats.SendErrors += failed
	l.mu.Unlock()
}

// receive handles one decrypted user message (memberlist's packet goroutine).
func (l *Link) receive(b []byte) {
	m, err := decodeMessage(b)
	if err != nil {
		l.countDrop(DropDecode)
		return
	}
	now := time.Now()
	l.mu.Lock()
	reason := l.tr.receive(m, now, now)
	if reason == "" {
		l.stats.Accepted++
	} else {
		l.stats.Dropped[reason]++
	}
	l.mu.Unlock()
	if reason != "" {
		l.log.Debug("heartbeat dropped", zap.String("reason", reason), zap.String("from", m.From))
		return
	}
	wake(l.poke)
	if !m.Reply {
		l.mu.Lock()
		l.replyTo[m.From] = true
		l.mu.Unlock()
		wake(l.reply)
	}
}

// watchLoop turns changes of the view (messages, peers, and time passing
// beyond DeadAfter) into log events and OnChange notifications.
func (l *Link) watchLoop(ctx context.Context) {
	defer l.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.poke:
		case <-timer.C:
		}
		now := time.Now()
		l.mu.Lock()
		view := l.tr.view(now)
		next := l.tr.nextFlip(now)
		prev := l.lastView
		changed := !sameView(prev, view)
		l.lastView = view
		l.mu.Unlock()
		if changed {
			l.logChanges(prev, view)
			wake(l.notify)
		}
		l.advanceRotation()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if next.IsZero() {
			timer.Reset(time.Hour)
		} else {
			timer.Reset(time.Until(next))
		}
	}
}

func (l *Link) logChanges(prev, cur map[string]PeerView) {
	for name, v := range cur {
		p, had := prev[name]
		if !had {
			l.log.Info("peer configured", zap.String("event", "peerAdded"), zap.String("peer", name), zap.Stringer("addr", v.Addr))
		}
		if had && p.Alive != v.Alive || !had && v.Alive {
			ev := "peerDead"
			if v.Alive {
				ev = "peerAlive"
			}
			l.log.Info("peer aliveness", zap.String("event", ev), zap.String("peer", name), zap.Stringer("addr", v.Addr),
				zap.Time("lastHeard", v.LastHeard))
		}
		if had && p.AcksMe != v.AcksMe {
			ev := "peerStoppedAcking"
			if v.AcksMe {
				ev = "peerAcksMe"
			}
			l.log.Info("peer hears us", zap.String("event", ev), zap.String("peer", name))
		}
		if had && !maps.Equal(p.Claims, v.Claims) {
			l.log.Info("peer claims", zap.String("event", "peerClaimsChanged"), zap.String("peer", name), zap.Any("claims", v.Claims))
		}
	}
	for name := range prev {
		if _, ok := cur[name]; !ok {
			l.log.Info("peer removed", zap.String("event", "peerRemoved"), zap.String("peer", name))
		}
	}
}

func (l *Link) notifyLoop(ctx context.Context) {
	defer l.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.notify:
		}
		l.mu.Lock()
		cbs := append([]func(){}, l.callbacks...)
		l.mu.Unlock()
		for _, fn := range cbs {
			fn()
		}
	}
}

// mlHooks are memberlist's delegates: user messages go to the Link, and
// membership (joins, alive gossip) is refused for anything but this
// gateway and its configured peers.
type mlHooks struct{ l *Link }

func (h *mlHooks) NodeMeta(int) []byte                 { return nil }
func (h *mlHooks) NotifyMsg(b []byte)                  { h.l.receive(b) }
func (h *mlHooks) GetBroadcasts(int, int) [][]byte     { return nil }
func (h *mlHooks) LocalState(bool) []byte              { return nil }
func (h *mlHooks) MergeRemoteState(buf []byte, _ bool) {}

func (h *mlHooks) NotifyAlive(n *memberlist.Node) error { return h.admit(n) }

func (h *mlHooks) NotifyMerge(nodes []*memberlist.Node) error {
	for _, n := range nodes {
		if err := h.admit(n); err != nil {
			return err
		}
	}
	return nil
}

var errNotConfigured = errors.New("not a configured gateway")

func (h *mlHooks) admit(n *memberlist.Node) error {
	ip, _ := netip.AddrFromSlice(n.Addr)
	h.l.mu.Lock()
	ok := h.l.tr.nodeAllowed(n.Name, ip, h.l.cfg.BindAddr)
	if !ok {
		h.l.stats.Dropped[DropMember]++
	}
	h.l.mu.Unlock()
	if !ok {
		return fmt.Errorf("node %q at %s: %w", n.Name, net.JoinHostPort(ip.String(), strconv.Itoa(int(n.Port))), errNotConfigured)
	}
	return nil
}
