package bgp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/vishvananda/netns"

	"github.com/netbridge-io/netbridge/internal/frrtest"
)

// The BFD tests measure time: none of them calls t.Parallel, so they run
// one after the other, before the package's parallel tests start. (GoBGP's
// BFD listener is one wildcard UDP 3784 socket per server: two speakers
// with BFD in one namespace would also steal each other's packets.)

// labBFD is the lab's BFD timers: 100 ms × 3, the FRR snippet's.
var labBFD = BFD{MinRx: 100 * time.Millisecond, MinTx: 100 * time.Millisecond, Multiplier: 3}

// routerSnippet returns the documented router configuration
// (testdata/frr-gateway-bfd.conf, referenced by docs/operations.md) for one
// gateway address, split into its bfd part and its router bgp part.
func routerSnippet(t testing.TB, gw, router netip.Addr, routerIf string, gwASN, routerASN uint32) (bfdPart, bgpPart string) {
	t.Helper()
	b, err := os.ReadFile("testdata/frr-gateway-bfd.conf")
	if err != nil {
		t.Fatalf("router snippet: %v", err)
	}
	s := strings.NewReplacer("GATEWAY_IP", gw.String(), "GATEWAY_ASN", fmt.Sprint(gwASN),
		"ROUTER_IP", router.String(), "ROUTER_IF", routerIf, "ROUTER_ASN", fmt.Sprint(routerASN)).Replace(string(b))
	i := strings.Index(s, "\nrouter bgp ")
	if i < 0 {
		t.Fatal("router snippet has no router bgp block")
	}
	return s[:i+1], s[i+1:]
}

type eventLog struct {
	mu  sync.Mutex
	evs []PeerEvent
}

func record(s *Speaker) *eventLog {
	e := &eventLog{}
	s.Subscribe(func(ev PeerEvent) {
		e.mu.Lock()
		e.evs = append(e.evs, ev)
		e.mu.Unlock()
	})
	return e
}

// first returns the first event at or after t that matches.
func (e *eventLog) first(t time.Time, match func(PeerEvent) bool) (PeerEvent, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range e.evs {
		if !ev.Time.Before(t) && match(ev) {
			return ev, true
		}
	}
	return PeerEvent{}, false
}

func (e *eventLog) count(t time.Time, match func(PeerEvent) bool) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ev := range e.evs {
		if !ev.Time.Before(t) && match(ev) {
			n++
		}
	}
	return n
}

func bfdDown(ev PeerEvent) bool { return ev.BFD && ev.BFDState != BFDUp }

func peerStatus(t testing.TB, s *Speaker, a netip.Addr) PeerStatus {
	t.Helper()
	st, err := s.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Peers {
		if p.Address == a {
			return p
		}
	}
	t.Fatalf("peer %s not in status", a)
	return PeerStatus{}
}

// waitStable waits until the session is Established with BFD Up and has
// stayed so for hold; it fails if that stable period did not start within
// within. It returns when the stable period started.
func waitStable(t testing.TB, s *Speaker, a netip.Addr, from time.Time, within, hold time.Duration) time.Time {
	t.Helper()
	var since time.Time
	for {
		p := peerStatus(t, s, a)
		now := time.Now()
		if p.State == StateEstablished && p.BFDState == BFDUp {
			if since.IsZero() {
				since = now
			}
			if now.Sub(since) >= hold {
				return since
			}
		} else {
			since = time.Time{}
		}
		if (since.IsZero() && now.Sub(from) > within) || (!since.IsZero() && since.Sub(from) > within) {
			t.Fatalf("peer %s not Established with BFD Up for %s within %s (state %s, BFD %q, resets %d, last %q)",
				a, hold, within, p.State, p.BFDState, p.SessionResets, p.LastDisconnect)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// blackhole drops every packet entering or leaving the router's end of
// the link (netdev ingress and egress hooks in the router's namespace), as
// a dead gateway node: no FIN, no RST, no ICMP, and no send error for FRR.
// The returned func lifts it.
func (l *lab) blackhole(t testing.TB) (restore func()) {
	t.Helper()
	ns, err := netns.GetFromName(l.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	tbl := c.AddTable(&nftables.Table{Family: nftables.TableFamilyNetdev, Name: "nbtest_blackhole"})
	drop := nftables.ChainPolicyDrop
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"in", nftables.ChainHookIngress}, {"out", nftables.ChainHookEgress}} {
		c.AddChain(&nftables.Chain{Name: h.name, Table: tbl, Type: nftables.ChainTypeFilter, Hooknum: h.hook,
			Priority: nftables.ChainPriorityFilter, Device: l.dcIf, Policy: &drop})
	}
	if err := c.Flush(); err != nil {
		_ = c.CloseLasting()
		t.Fatalf("blackhole %s: %v", l.dcIf, err)
	}
	var once sync.Once
	restore = func() {
		once.Do(func() {
			c.DelTable(tbl)
			if err := c.Flush(); err != nil {
				t.Errorf("lift blackhole: %v", err)
			}
			_ = c.CloseLasting()
		})
	}
	t.Cleanup(restore)
	return restore
}

// linksDown takes the gateway's link down (node loss: all its links at
// once; here it has one).
func (l *lab) linksDown(t testing.TB) (restore func()) {
	t.Helper()
	run(t, "ip", "link", "set", l.hostIf, "down")
	var once sync.Once
	restore = func() { once.Do(func() { run(t, "ip", "link", "set", l.hostIf, "up") }) }
	t.Cleanup(restore)
	return restore
}

// fibGone polls FRR's kernel table every 2 ms until p is gone; it returns
// the time since t0.
func (l *lab) fibGone(t testing.TB, p netip.Prefix, t0 time.Time, max time.Duration) time.Duration {
	t.Helper()
	for {
		ok, err := l.frr.HasKernelRoute(p)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return time.Since(t0)
		}
		if time.Since(t0) > max {
			t.Fatalf("%s still in FRR's kernel table %s after the cut", p, max)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// bfdLab is a lab whose FRR runs the documented snippet, with a speaker
// advertising one route over a BFD session.
func bfdLab(t *testing.T, o frrOpts, gr bool) (*lab, *Speaker, *eventLog, Peer, Route) {
	o.bfd = true
	l := newLab(t, o)
	s := newSpeaker(t)
	evs := record(s)
	p := l.peer(o)
	b := labBFD
	p.BFD = &b
	if gr {
		p.GracefulRestart, p.RestartTime = true, 60*time.Second
	}
	route := Route{Prefix: l.host(50)}
	if _, err := s.Apply(context.Background(), l.desired([]Peer{p}, route)); err != nil {
		t.Fatal(err)
	}
	// FRR 8.4 resets a new session once or twice while it learns the
	// session's source and interface (see TestBFDUp): let that settle
	// before measuring.
	waitStable(t, s, l.dcV4, time.Now(), 40*time.Second, 5*time.Second)
	l.waitKernel(t, route.Prefix, true)
	return l, s, evs, p, route
}

func TestValidateBFD(t *testing.T) {
	base := Desired{Global: Global{ASN: 65000, RouterID: addr("192.0.2.1")}}
	peer := func(b BFD, ttl uint8) Desired {
		d := base
		d.Peers = []Peer{{Address: addr("192.0.2.2"), ASN: 65001, BFD: &b, EBGPMultihopTTL: ttl}}
		return d
	}
	for _, c := range []struct {
		name string
		d    Desired
		want string // "" = valid
	}{
		{"defaults", peer(BFD{}, 0), ""},
		{"lab", peer(labBFD, 0), ""},
		{"bounds", peer(BFD{MinRx: 10 * time.Millisecond, MinTx: 60 * time.Second, Multiplier: 255}, 1), ""},
		{"rx too small", peer(BFD{MinRx: 9 * time.Millisecond}, 0), "peer 192.0.2.2: BFD.MinRx 9ms outside"},
		{"tx too large", peer(BFD{MinTx: 61 * time.Second}, 0), "peer 192.0.2.2: BFD.MinTx 1m1s outside"},
		{"sub-microsecond", peer(BFD{MinTx: 100*time.Millisecond + 1}, 0), "BFD.MinTx 100.000001ms is not a whole number of microseconds"},
		{"multihop", peer(BFD{}, 2), "peer 192.0.2.2: BFD with EBGPMultihopTTL 2"},
	} {
		err := validate(c.d)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	// A refused BFD setting leaves a running speaker untouched.
	s := New(nil)
	if _, err := s.Apply(context.Background(), peer(BFD{MinRx: time.Millisecond}, 0)); err == nil || s.srv != nil {
		t.Errorf("Apply accepted bad BFD timers (err %v) or started the server", err)
	}
}

func TestBFDPeerConversion(t *testing.T) {
	p := Peer{Address: addr("192.0.2.2"), ASN: 65001, BFD: &BFD{}}
	ap := toAPIPeer(p, false)
	b := ap.GetBfd()
	if !b.GetEnabled() || b.GetPort() != 3784 || b.GetDesiredMinimumTxInterval() != 300000 ||
		b.GetRequiredMinimumReceive() != 300000 || b.GetDetectionMultiplier() != 3 {
		t.Errorf("defaults: %v", b)
	}
	if (BFD{}).DetectionTime() != 900*time.Millisecond || labBFD.DetectionTime() != 300*time.Millisecond {
		t.Errorf("detection times %s %s", BFD{}.DetectionTime(), labBFD.DetectionTime())
	}
	if ap.GetTimers().GetConfig().GetIdleHoldTimeAfterReset() != 1 {
		t.Errorf("idle hold after reset %d, want 1 s", ap.GetTimers().GetConfig().GetIdleHoldTimeAfterReset())
	}
	if toAPIPeer(Peer{Address: addr("192.0.2.2"), ASN: 65001}, false).GetBfd() != nil {
		t.Error("BFD on for a peer without BFD")
	}
	lab := labBFD
	p.BFD = &lab
	if b := toAPIPeer(p, false).GetBfd(); b.GetDesiredMinimumTxInterval() != 100000 || b.GetRequiredMinimumReceive() != 100000 {
		t.Errorf("lab timers: %v", b)
	}
	// Same timers by value: no reset; defaults spelled out equal zeros.
	q := p
	q.BFD = &BFD{MinRx: 100 * time.Millisecond, MinTx: 100 * time.Millisecond, Multiplier: 3}
	d1 := Peer{Address: addr("192.0.2.2"), ASN: 65001, BFD: &BFD{}}
	d2 := Peer{Address: addr("192.0.2.2"), ASN: 65001, BFD: &BFD{MinRx: DefaultBFDInterval, MinTx: DefaultBFDInterval, Multiplier: DefaultBFDMultiplier}}
	if !equalPeer(p, q) || !equalPeer(d1, d2) || equalPeer(p, d1) || equalPeer(p, Peer{Address: p.Address, ASN: p.ASN}) {
		t.Error("equalPeer")
	}
}

// TestBFDUp: BFD comes up with FRR's bfdd on an IPv4 and an IPv6 session,
// both sides agree on state and timers, and the speaker reports BFD state
// changes as peer events.
func TestBFDUp(t *testing.T) {
	ctx := context.Background()
	o := frrOpts{bfd: true, v6: true}
	l := newLab(t, o)
	s := newSpeaker(t)
	evs := record(s)
	t0 := time.Now()
	b := labBFD
	p4 := l.peer(o)
	p4.BFD = &b
	p6 := p4
	p6.Address = l.dcV6
	if _, err := s.Apply(ctx, l.desired([]Peer{p4, p6})); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{l.dcV4, l.dcV6} {
		up := waitStable(t, s, a, t0, 30*time.Second, time.Second)
		t.Logf("peer %s Established with BFD Up %s after Apply", a, up.Sub(t0).Round(time.Millisecond))
		if _, ok := evs.first(t0, func(e PeerEvent) bool { return e.Address == a && e.BFD && e.BFDState == BFDUp }); !ok {
			t.Errorf("no BFD Up event for %s", a)
		}
		if _, ok := evs.first(t0, func(e PeerEvent) bool { return e.Address == a && !e.BFD && e.State == StateEstablished }); !ok {
			t.Errorf("no Established event for %s", a)
		}
	}
	frrtest.Eventually(t, 10*time.Second, func() error {
		peers, err := l.frr.BFDPeers()
		if err != nil {
			return err
		}
		for _, gw := range []netip.Addr{l.hostV4, l.hostV6} {
			bp, ok := peers[gw.String()]
			switch {
			case !ok:
				return fmt.Errorf("FRR has no BFD peer %s: %+v", gw, peers)
			case bp.Status != "up":
				return fmt.Errorf("FRR BFD peer %s status %q", gw, bp.Status)
			case bp.ReceiveInterval != 100 || bp.TransmitInterval != 100 || bp.DetectMultiplier != 3:
				return fmt.Errorf("FRR BFD peer %s local timers rx %d tx %d mult %d, want 100/100/3", gw, bp.ReceiveInterval, bp.TransmitInterval, bp.DetectMultiplier)
			case bp.RemoteReceive != 100 || bp.RemoteTransmit != 100 || bp.RemoteDetectMult != 3:
				return fmt.Errorf("FRR BFD peer %s sees our timers rx %d tx %d mult %d, want 100/100/3", gw, bp.RemoteReceive, bp.RemoteTransmit, bp.RemoteDetectMult)
			}
		}
		return nil
	})
	for _, a := range []netip.Addr{l.dcV4, l.dcV6} {
		ps := peerStatus(t, s, a)
		t.Logf("peer %s: state=%s bfd=%s resets=%d bfd_down=%d last=%q", a, ps.State, ps.BFDState, ps.SessionResets, ps.BFDDownTransitions, ps.LastDisconnect)
	}
	// FRR 8.4's bgpd sends Cease/BFD Down when the session first becomes
	// Established: it then learns the session's source address and
	// interface, re-registers the BFD session and takes the transient
	// Down it gets back as a real one (FRR issue 17337, fixed upstream by
	// PR 17344). GoBGP recovers within a few seconds (1 s idle hold).
	// More than two resets would be a loop.
	for _, a := range []netip.Addr{l.dcV4, l.dcV6} {
		if ps := peerStatus(t, s, a); ps.SessionResets > 2 {
			t.Errorf("peer %s reset %d times while coming up", a, ps.SessionResets)
		}
	}
}

// TestBFDBlackholeDetection: the gateway goes silent (packets dropped; then
// separately its link down): FRR takes the route out of its kernel FIB
// within multiplier × interval + 100 ms (goal 400 ms at 100 ms × 3,
// asserted ≤ 2× that), and the session comes back once the path returns.
func TestBFDBlackholeDetection(t *testing.T) {
	l, s, evs, _, route := bfdLab(t, frrOpts{}, false)
	goal := labBFD.DetectionTime() + 100*time.Millisecond
	for _, c := range []struct {
		name string
		cut  func(testing.TB) func()
	}{{"nft-drop", l.blackhole}, {"links-down", l.linksDown}} {
		t0 := time.Now()
		restore := c.cut(t)
		fib := l.fibGone(t, route.Prefix, t0, 10*time.Second)
		var detect time.Duration
		frrtest.Eventually(t, 5*time.Second, func() error {
			ev, ok := evs.first(t0, func(e PeerEvent) bool { return e.Address == l.dcV4 && bfdDown(e) })
			if !ok {
				return fmt.Errorf("no BFD down event")
			}
			detect = ev.Time.Sub(t0)
			return nil
		})
		t.Logf("%s: detect_ms=%d fib_removed_ms=%d (goal %d ms)", c.name, detect.Milliseconds(), fib.Milliseconds(), goal.Milliseconds())
		if fib > 2*goal {
			t.Errorf("%s: route left FRR's FIB after %s, want ≤ %s (2× goal)", c.name, fib, 2*goal)
		}
		if detect > 2*labBFD.DetectionTime() {
			t.Errorf("%s: GoBGP declared BFD down after %s, want ≤ %s", c.name, detect, 2*labBFD.DetectionTime())
		}
		time.Sleep(time.Second) // a node stays dead for a while
		r0 := time.Now()
		restore()
		up := waitStable(t, s, l.dcV4, r0, 5*time.Second, 2*time.Second)
		l.waitKernel(t, route.Prefix, true)
		t.Logf("%s: recovered_ms=%d (Established, BFD Up)", c.name, up.Sub(r0).Milliseconds())
	}
}

// TestBFDGracefulRestartKill: the agent is killed (-9) on a live node and
// restarts; with GR the route never leaves FRR's kernel table, although
// BFD goes down with the process (FRR keeps a GR-restarting peer's routes).
func TestBFDGracefulRestartKill(t *testing.T) {
	o := frrOpts{bfd: true}
	l := newLab(t, o)
	p := l.peer(o)
	b := labBFD
	p.BFD = &b
	p.GracefulRestart, p.RestartTime = true, 60*time.Second
	route := Route{Prefix: l.host(31)}
	d := l.desired([]Peer{p}, route)
	first := startChild(t, d)
	l.waitKernel(t, route.Prefix, true)
	waitFRRBFD(t, l, "up", 20*time.Second)

	var (
		mu              sync.Mutex
		samples, misses int
	)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
			}
			ok, err := l.frr.HasKernelRoute(route.Prefix)
			mu.Lock()
			samples++
			if err != nil || !ok {
				misses++
			}
			mu.Unlock()
		}
	}()
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = first.Process.Wait()
	killed := time.Now()
	waitFRRBFD(t, l, "down", 5*time.Second)
	t.Logf("FRR's BFD down %s after the kill", time.Since(killed).Round(time.Millisecond))
	time.Sleep(time.Second) // the agent takes a while to come back
	startChild(t, d)
	frrtest.Eventually(t, 30*time.Second, func() error {
		paths, err := l.frr.Route(route.Prefix)
		if err != nil {
			return err
		}
		if len(paths) == 0 || paths[0].Stale {
			return fmt.Errorf("FRR paths %+v, want one fresh path", paths)
		}
		return nil
	})
	waitFRRBFD(t, l, "up", 10*time.Second)
	t.Logf("route fresh and BFD up %s after the kill", time.Since(killed).Round(time.Millisecond))
	time.Sleep(time.Second)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	t.Logf("samples=%d misses=%d (every 20 ms)", samples, misses)
	if samples < 50 || misses != 0 {
		t.Fatalf("route absent from FRR's kernel table in %d of %d samples", misses, samples)
	}
}

func waitFRRBFD(t testing.TB, l *lab, status string, within time.Duration) {
	t.Helper()
	frrtest.Eventually(t, within, func() error {
		peers, err := l.frr.BFDPeers()
		if err != nil {
			return err
		}
		if got := peers[l.hostV4.String()].Status; got != status {
			return fmt.Errorf("FRR BFD peer %s status %q, want %q", l.hostV4, got, status)
		}
		return nil
	})
}

// TestBFDBlackholeWithGR: the node dies with graceful restart negotiated:
// with the documented router config FRR flushes the routes at BFD-down, it
// does not keep them as stale for the restart time.
func TestBFDBlackholeWithGR(t *testing.T) {
	l, s, _, _, route := bfdLab(t, frrOpts{}, true)
	var nb map[string]struct {
		GR struct {
			Remote string `json:"remoteGrMode"`
		} `json:"gracefulRestartInfo"`
	}
	if err := l.frr.VtyshJSON("show bgp neighbors "+l.hostV4.String()+" json", &nb); err != nil {
		t.Fatal(err)
	}
	if m := nb[l.hostV4.String()].GR.Remote; m != "Restart" {
		t.Fatalf("FRR sees the gateway's GR mode %q, want Restart (GR not negotiated)", m)
	}
	goal := labBFD.DetectionTime() + 100*time.Millisecond
	t0 := time.Now()
	restore := l.blackhole(t)
	fib := l.fibGone(t, route.Prefix, t0, 10*time.Second)
	t.Logf("GR negotiated, blackhole: fib_removed_ms=%d (goal %d ms)", fib.Milliseconds(), goal.Milliseconds())
	if fib > 2*goal {
		t.Errorf("route left FRR's FIB after %s, want ≤ %s: FRR kept a dead gateway's routes", fib, 2*goal)
	}
	restore()
	waitStable(t, s, l.dcV4, time.Now(), 5*time.Second, time.Second)
}

// TestBFDNoFlapLoop: 20 blackhole/restore cycles (static neighbours, the
// documented config); each ends Established with BFD Up within 5 s and
// stays so (gobgp#3561's stale reset would kill the session right after
// it came up, over and over).
func TestBFDNoFlapLoop(t *testing.T) {
	l, s, _, _, route := bfdLab(t, frrOpts{}, false)
	const cycles = 20
	start := peerStatus(t, s, l.dcV4)
	var worst time.Duration
	for i := range cycles {
		t0 := time.Now()
		restore := l.blackhole(t)
		l.fibGone(t, route.Prefix, t0, 5*time.Second)
		frrtest.Eventually(t, 5*time.Second, func() error {
			if p := peerStatus(t, s, l.dcV4); p.BFDState == BFDUp {
				return fmt.Errorf("BFD still up")
			}
			return nil
		})
		time.Sleep(500 * time.Millisecond)
		r0 := time.Now()
		restore()
		up := waitStable(t, s, l.dcV4, r0, 5*time.Second, 2*time.Second)
		worst = max(worst, up.Sub(r0))
		p := peerStatus(t, s, l.dcV4)
		t.Logf("cycle %d: up_ms=%d resets=%d bfd_down=%d", i+1, up.Sub(r0).Milliseconds(), p.SessionResets-start.SessionResets, p.BFDDownTransitions-start.BFDDownTransitions)
	}
	end := peerStatus(t, s, l.dcV4)
	resets, flaps := end.SessionResets-start.SessionResets, end.BFDDownTransitions-start.BFDDownTransitions
	t.Logf("cycles=%d resets=%d bfd_down=%d extra_resets=%d worst_up_ms=%d", cycles, resets, flaps, int(resets)-cycles, worst.Milliseconds())
	if resets < cycles || flaps < cycles {
		t.Errorf("counted %d resets and %d BFD downs over %d blackholes: a counter misses events", resets, flaps, cycles)
	}
}

// TestBFDTimerChange: changing the BFD timers of a running peer resets its
// session exactly once (the peer is re-added) and FRR sees the new timers.
func TestBFDTimerChange(t *testing.T) {
	l, s, evs, p, route := bfdLab(t, frrOpts{}, false)
	p.BFD = &BFD{MinRx: 200 * time.Millisecond, MinTx: 200 * time.Millisecond, Multiplier: 4}
	t0 := time.Now()
	rep, err := s.Apply(context.Background(), l.desired([]Peer{p}, route))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.PeersUpdated) != 1 {
		t.Fatalf("report %+v, want the peer updated", rep)
	}
	waitStable(t, s, l.dcV4, t0, 10*time.Second, 3*time.Second)
	ups := evs.count(t0, func(e PeerEvent) bool { return !e.BFD && e.State == StateEstablished })
	t.Logf("timer change: established %d time(s) after the change", ups)
	if ups != 1 {
		t.Errorf("session came up %d times after a timer change, want 1 (one reset)", ups)
	}
	frrtest.Eventually(t, 5*time.Second, func() error {
		bp := mustBFDPeer(t, l)
		if bp.RemoteReceive != 200 || bp.RemoteTransmit != 200 || bp.RemoteDetectMult != 4 || bp.Status != "up" {
			return fmt.Errorf("FRR sees %+v, want up with 200/200/4", bp)
		}
		return nil
	})
	// Re-applying the same timers (a new pointer) changes nothing.
	same := *p.BFD
	p.BFD = &same
	if rep, err := s.Apply(context.Background(), l.desired([]Peer{p}, route)); err != nil || rep.Changed() {
		t.Errorf("re-apply: %+v, %v", rep, err)
	}
}

func mustBFDPeer(t testing.TB, l *lab) frrtest.BFDPeer {
	peers, err := l.frr.BFDPeers()
	if err != nil {
		t.Fatal(err)
	}
	return peers[l.hostV4.String()]
}

// TestBFDSoak: BFD at 100 ms × 3 for NETBRIDGE_BFD_SOAK (default 10m) with
// zero session resets and zero BFD downs on either side.
func TestBFDSoak(t *testing.T) {
	d := 10 * time.Minute
	if v := os.Getenv("NETBRIDGE_BFD_SOAK"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			t.Fatalf("NETBRIDGE_BFD_SOAK=%q: want a positive duration like 10m (%v)", v, err)
		}
	}
	l, s, evs, _, route := bfdLab(t, frrOpts{}, false)
	before := peerStatus(t, s, l.dcV4)
	frrBefore := bfdCounters(t, l)
	t0 := time.Now()
	misses := 0
	// The machine's load, for context: BFD at 300 ms detection runs in the
	// agent's process and competes for CPU with everything else.
	var loadMax float64
	for time.Since(t0) < d {
		time.Sleep(time.Second)
		if ok, err := l.frr.HasKernelRoute(route.Prefix); err != nil || !ok {
			misses++
		}
		loadMax = max(loadMax, load1())
	}
	for _, e := range evs.all(t0) {
		if e.BFD && e.BFDState == BFDDown {
			t.Logf("soak: BFD down at +%s", e.Time.Sub(t0).Round(time.Millisecond))
		}
	}
	t.Logf("soak: load1_max=%.2f on %d CPUs", loadMax, runtime.NumCPU())
	after := peerStatus(t, s, l.dcV4)
	frrAfter := bfdCounters(t, l)
	resets, downs := after.SessionResets-before.SessionResets, after.BFDDownTransitions-before.BFDDownTransitions
	frrDowns := frrAfter.SessionDown - frrBefore.SessionDown
	t.Logf("soak %s: soak_resets=%d soak_bfd_down=%d frr_bfd_down=%d route_misses=%d frr_rx=%d frr_tx=%d",
		d, resets, downs, frrDowns, misses, frrAfter.ControlIn-frrBefore.ControlIn, frrAfter.ControlOut-frrBefore.ControlOut)
	if resets != 0 || downs != 0 || frrDowns != 0 || misses != 0 || after.State != StateEstablished {
		t.Errorf("soak not clean: resets %d, BFD downs %d (FRR %d), route misses %d, state %s, last %q",
			resets, downs, frrDowns, misses, after.State, after.LastDisconnect)
	}
}

// load1 is the 1-minute load average.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var v float64
	_, _ = fmt.Sscan(string(b), &v)
	return v
}

func (e *eventLog) all(t time.Time) []PeerEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []PeerEvent
	for _, ev := range e.evs {
		if !ev.Time.Before(t) {
			out = append(out, ev)
		}
	}
	return out
}

func bfdCounters(t testing.TB, l *lab) frrtest.BFDCounters {
	t.Helper()
	c, err := l.frr.BFDPeerCounters()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := c[l.hostV4.String()]
	if !ok {
		b, _ := json.Marshal(c)
		t.Fatalf("FRR has no BFD counters for %s: %s", l.hostV4, b)
	}
	return got
}

// TestBFDCheckControlPlaneFailure shows why the router snippet leaves out
// `bfd check-control-plane-failure`: GoBGP sends C=0, and with graceful
// restart negotiated FRR then ignores BFD-down, keeping a dead gateway's
// route until the hold time.
func TestBFDCheckControlPlaneFailure(t *testing.T) {
	l, _, _, _, route := bfdLab(t, frrOpts{extra: " neighbor GATEWAY bfd check-control-plane-failure\n"}, true)
	t0 := time.Now()
	l.blackhole(t)
	time.Sleep(2 * time.Second)
	ok, err := l.frr.HasKernelRoute(route.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("route left the FIB within 2 s: FRR did act on BFD-down with check-control-plane-failure")
	}
	fib := l.fibGone(t, route.Prefix, t0, 30*time.Second)
	t.Logf("with check-control-plane-failure and GR: fib_removed_ms=%d (BFD ignored; hold time)", fib.Milliseconds())
}

func TestObserverBFDAndResets(t *testing.T) {
	o := newObserver()
	var got []PeerEvent
	o.subscribe(func(e PeerEvent) { got = append(got, e) })
	a := netip.MustParseAddr("192.0.2.1")
	state := func(s bgppkt.FSMState, msg string) {
		o.onWatch(&apiutil.WatchEventMessage_PeerEvent{Type: apiutil.PEER_EVENT_STATE,
			Peer: apiutil.Peer{State: apiutil.PeerState{NeighborAddress: a, SessionState: s, DisconnectMessage: msg}}}, time.Now())
	}
	o.onBFD(a, BFDDown)
	o.onBFD(a, BFDDown) // no change, no event
	o.onBFD(a, BFDUp)
	state(bgppkt.BGP_FSM_ESTABLISHED, "")
	o.onBFD(a, BFDDown)
	state(bgppkt.BGP_FSM_IDLE, "notification-sent code 6(cease) subcode 4(administrative reset)")
	p := o.peers[a]
	if p.bfdDowns != 1 || p.resets != 1 || p.lastDisconnect != "notification-sent code 6(cease) subcode 4(administrative reset)" {
		t.Errorf("counters: BFD downs %d, resets %d, last %q", p.bfdDowns, p.resets, p.lastDisconnect)
	}
	if len(got) != 5 {
		t.Fatalf("events = %+v, want 5", got)
	}
	if e := got[3]; !e.BFD || e.BFDState != BFDDown || e.State != StateEstablished {
		t.Errorf("BFD down event = %+v", e)
	}
	if e := got[4]; e.BFD || e.State != StateIdle || e.BFDState != BFDDown || e.Reason == "" {
		t.Errorf("session down event = %+v", e)
	}
	if r := disconnectReason(api.PeerState_DISCONNECT_REASON_HOLD_TIMER_EXPIRED, ""); r != "hold_timer_expired" {
		t.Errorf("reason without message = %q", r)
	}
}
