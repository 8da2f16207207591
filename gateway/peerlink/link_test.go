package peerlink

import (
	"fmt"
	"maps"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// allSeeAll reports whether every link sees every other alive and hearing it.
func allSeeAll(links map[string]*Link) bool {
	for _, l := range links {
		for _, v := range l.Peers() {
			if !v.Alive || !v.AcksMe {
				return false
			}
		}
	}
	return true
}

// threeGateways starts a, b and c, each configured with the other two,
// and waits until all see each other.
func threeGateways(t *testing.T) ([]*gateway, map[string]*Link) {
	t.Helper()
	gws := underlay(t, "a", "b", "c")
	links := map[string]*Link{}
	for _, g := range gws {
		links[g.name] = g.start(t, Config{})
	}
	start := time.Now()
	for _, g := range gws {
		if err := links[g.name].SetPeers(peersOf(g, gws)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := waitFor(5*time.Second, func() bool { return allSeeAll(links) }); !ok {
		t.Fatalf("gateways never saw each other: a=%+v b=%+v c=%+v", links["a"].Peers(), links["b"].Peers(), links["c"].Peers())
	}
	t.Logf("converge_ms=%d", time.Since(start).Milliseconds())
	return gws, links
}

func TestThreeGatewaysSeeEachOtherAndClaimsPropagate(t *testing.T) {
	gws := underlay(t, "a", "b", "c")
	links := map[string]*Link{}
	var changes atomic.Int64
	for _, g := range gws {
		links[g.name] = g.start(t, Config{})
	}
	links["c"].OnChange(func() { changes.Add(1) })
	start := time.Now()
	for _, g := range gws {
		if err := links[g.name].SetPeers(peersOf(g, gws)); err != nil {
			t.Fatal(err)
		}
	}
	took, ok := waitFor(5*time.Second, func() bool { return allSeeAll(links) })
	if !ok {
		t.Fatalf("not all alive with acks after %s", took)
	}
	// Goal: three heartbeats (a message each way plus slack); asserted at 2x.
	goal := 3 * testHeartbeat
	t.Logf("converge_ms=%d goal_ms=%d", time.Since(start).Milliseconds(), goal.Milliseconds())
	if d := time.Since(start); d > 2*goal {
		t.Errorf("convergence took %s, more than 2x %s", d, goal)
	}
	if changes.Load() == 0 {
		t.Errorf("OnChange never called on c while its peers came alive")
	}

	// Replies keep acks fresh: the age of b's ack of a stays near a round
	// trip plus a heartbeat, far inside DeadAfter.
	var maxAge time.Duration
	for end := time.Now().Add(10 * testHeartbeat); time.Now().Before(end); time.Sleep(3 * time.Millisecond) {
		if v := links["a"].Peers()["b"]; !v.AckedSent.IsZero() && time.Since(v.AckedSent) > maxAge {
			maxAge = time.Since(v.AckedSent)
		}
	}
	t.Logf("ack_age_max_ms=%d deadafter_ms=%d", maxAge.Milliseconds(), testDeadAfter.Milliseconds())

	// Bad peers are refused as a whole; the working peers stay.
	if err := links["a"].SetPeers(map[string]netip.AddrPort{"b": netip.MustParseAddrPort("0.0.0.0:7946")}); err == nil {
		t.Errorf("SetPeers accepted an unspecified address")
	} else {
		t.Logf("bad peers refused: %v", err)
	}
	if _, ok := waitFor(2*testDeadAfter, func() bool { return allSeeAll(links) && len(links["a"].Peers()) == 2 }); !ok {
		t.Errorf("a refused SetPeers changed the view: %+v", links["a"].Peers())
	}

	// A claim reaches the peers at once (SetClaims sends without waiting
	// for the heartbeat tick).
	before := changes.Load()
	want := map[string]Claim{"s1": {Holding: true, Epoch: 7}, "s2": {Epoch: 3}}
	mustSetClaims(t, links["a"], want)
	sent := time.Now()
	took, ok = waitFor(2*time.Second, func() bool {
		return maps.Equal(links["b"].Peers()["a"].Claims, want) && maps.Equal(links["c"].Peers()["a"].Claims, want)
	})
	if !ok {
		t.Fatalf("claims did not propagate: b sees %+v", links["b"].Peers()["a"].Claims)
	}
	t.Logf("claim_ms=%d", took.Milliseconds())
	if took > 2*testHeartbeat {
		t.Errorf("claim took %s, more than 2x a heartbeat (%s)", took, testHeartbeat)
	}
	if _, ok := waitFor(time.Second, func() bool { return changes.Load() > before }); !ok {
		t.Errorf("OnChange not called on c for a's new claims (%s after SetClaims)", time.Since(sent))
	}
	// A thousand segments still travel (compressed, a few IP fragments).
	many := map[string]Claim{}
	for i := 0; i < 1000; i++ {
		many[fmt.Sprintf("bridgeconfig-prod.segment-%04d", i)] = Claim{Holding: i%2 == 0, Epoch: uint64(i)}
	}
	mustSetClaims(t, links["a"], many)
	took, ok = waitFor(2*time.Second, func() bool { return maps.Equal(links["b"].Peers()["a"].Claims, many) })
	if !ok {
		t.Fatalf("1000 claims did not reach b: it sees %d", len(links["b"].Peers()["a"].Claims))
	}
	t.Logf("claims_1000_ms=%d", took.Milliseconds())
	if took > 2*testHeartbeat {
		t.Errorf("1000 claims took %s, more than 2x a heartbeat", took)
	}
	mustSetClaims(t, links["a"], want)
	if _, ok := waitFor(time.Second, func() bool { return maps.Equal(links["b"].Peers()["a"].Claims, want) }); !ok {
		t.Fatalf("b did not see a's claims shrink back")
	}

	// Too many claims are refused; the old ones stay and keep being sent.
	tooMany := map[string]Claim{}
	for i := 0; i <= MaxClaims; i++ {
		tooMany[fmt.Sprintf("seg-%d", i)] = Claim{Epoch: 1}
	}
	if err := links["a"].SetClaims(tooMany); err == nil {
		t.Errorf("SetClaims accepted %d claims", len(tooMany))
	}
	if !holdsFor(2*testHeartbeat, func() bool { return maps.Equal(links["b"].Peers()["a"].Claims, want) }) {
		t.Errorf("refused claims changed what b sees: %+v", links["b"].Peers()["a"].Claims)
	}
	// Yielding is a claim change too.
	mustSetClaims(t, links["a"], map[string]Claim{"s1": {Holding: false, Epoch: 7}})
	if _, ok := waitFor(time.Second, func() bool { return !links["b"].Peers()["a"].Claims["s1"].Holding }); !ok {
		t.Fatalf("yield not seen by b")
	}
	st := links["a"].Stats()
	if st.Sent == 0 || st.Accepted == 0 || st.SendErrors != 0 {
		t.Errorf("stats of a: %+v", st)
	}
	for reason, n := range st.Dropped {
		// memberlist hands queued messages to us newest first (its handoff
		// queue is LIFO), so two heartbeats arriving together leave one
		// stale: that is no fault.
		if reason == DropStale {
			t.Logf("dropped_stale=%d accepted=%d", n, st.Accepted)
			continue
		}
		t.Errorf("a dropped %d messages (%s) with no fault injected (accepted %d)", n, reason, st.Accepted)
	}
}

func TestPartitionBetweenTwoOfThree(t *testing.T) {
	gws, links := threeGateways(t)
	a, b := gws[0], gws[1]
	// The agent reacts to OnChange, not to polling: time the callback too.
	var notified atomic.Int64
	links["a"].OnChange(func() {
		if !links["a"].Peers()["b"].Alive {
			notified.CompareAndSwap(0, time.Now().UnixNano())
		}
	})
	undoA := dropFrom(t, a, b.addr, 0)
	undoB := dropFrom(t, b, a.addr, 0)
	cut := time.Now()
	took, ok := waitFor(5*time.Second, func() bool {
		return !links["a"].Peers()["b"].Alive && !links["b"].Peers()["a"].Alive
	})
	if !ok {
		t.Fatalf("a and b still see each other alive %s after the cut", took)
	}
	t.Logf("scenario=partition detect_ms=%d goal_ms=%d", took.Milliseconds(), testDeadAfter.Milliseconds())
	if took > 2*testDeadAfter {
		t.Errorf("detection took %s, more than 2x DeadAfter %s", took, testDeadAfter)
	}
	if _, ok := waitFor(time.Second, func() bool { return notified.Load() != 0 }); !ok {
		t.Fatalf("OnChange not called when b died at a")
	}
	onChange := time.Unix(0, notified.Load()).Sub(cut)
	t.Logf("scenario=partition onchange_ms=%d", onChange.Milliseconds())
	if onChange > 2*testDeadAfter {
		t.Errorf("OnChange came %s after the cut, more than 2x DeadAfter", onChange)
	}
	// They stop acking each other too; c is still heard by both and hears both.
	if v := links["a"].Peers()["b"]; v.AcksMe {
		t.Errorf("a: cut-off b still acks: %+v", v)
	}
	frac := mostly(3*testDeadAfter, func() bool {
		c := links["c"].Peers()
		return c["a"].Alive && c["a"].AcksMe && c["b"].Alive && c["b"].AcksMe &&
			links["a"].Peers()["c"].AcksMe && links["b"].Peers()["c"].AcksMe
	})
	t.Logf("third_party_ok_pct=%.0f", 100*frac)
	if frac < 0.9 {
		t.Errorf("c and its links with a and b were fine only %.0f%% of the time during a partition that does not involve c: %+v", 100*frac, links["c"].Peers())
	}
	t.Logf("cut_for_ms=%d", time.Since(cut).Milliseconds())
	undoA()
	undoB()
	took, ok = waitFor(5*time.Second, func() bool { return allSeeAll(links) })
	if !ok {
		t.Fatalf("a and b did not see each other again after the partition healed")
	}
	t.Logf("scenario=partition recover_ms=%d", took.Milliseconds())
}

func TestAsymmetricPartition(t *testing.T) {
	gws, links := threeGateways(t)
	a, b := gws[0], gws[1]
	if until, ok := links["a"].PeerGrant("b", "c"); !ok || until.After(time.Now().Add(testDeadAfter)) {
		t.Fatalf("a's peer grant before the fault: %s %v", time.Until(until), ok)
	}
	// a→b dropped, b→a passes.
	dropFrom(t, b, a.addr, 0)
	// Track the latest instant a's peer grant promised while it lasted.
	var lastGrant time.Time
	took, ok := waitFor(5*time.Second, func() bool {
		if until, ok := links["a"].PeerGrant("b", "c"); ok && until.After(lastGrant) {
			lastGrant = until
		}
		ab := links["a"].Peers()["b"]
		return !links["b"].Peers()["a"].Alive && ab.Alive && !ab.AcksMe
	})
	if !ok {
		t.Fatalf("after dropping a→b: b sees a %+v, a sees b %+v", links["b"].Peers()["a"], links["a"].Peers()["b"])
	}
	t.Logf("scenario=asymmetric detect_ms=%d goal_ms=%d", took.Milliseconds(), testDeadAfter.Milliseconds())
	if took > 2*testDeadAfter {
		t.Errorf("detection took %s, more than 2x DeadAfter %s", took, testDeadAfter)
	}
	// Safety of the peer rule: a's grant ended no later than b could call a
	// dead (both clocks are this process's monotonic clock).
	patience := links["b"].Peers()["a"].LastHeard.Add(testDeadAfter)
	t.Logf("grant_margin_us=%d", patience.Sub(lastGrant).Microseconds())
	if lastGrant.IsZero() || lastGrant.After(patience) {
		t.Errorf("a's peer grant ran to %s, after b's DeadAfter ended at %s", lastGrant.Format(time.StampMicro), patience.Format(time.StampMicro))
	}
	if _, ok := links["a"].PeerGrant("b", "c"); ok {
		t.Errorf("a still has a peer grant from b, which no longer hears it")
	}
	if _, ok := waitFor(2*testDeadAfter, func() bool { _, ok := links["a"].PeerGrant("c"); return ok }); !ok {
		t.Errorf("a lost c's grant, which still hears it")
	}
	frac := mostly(2*testDeadAfter, func() bool {
		ab := links["a"].Peers()["b"]
		return ab.Alive && !ab.AcksMe && !links["b"].Peers()["a"].Alive
	})
	t.Logf("asymmetric_view_ok_pct=%.0f", 100*frac)
	if frac < 0.9 {
		t.Errorf("asymmetric view held only %.0f%% of the time: a sees b %+v", 100*frac, links["a"].Peers()["b"])
	}
}

func TestNodeLoss(t *testing.T) {
	gws, links := threeGateways(t)
	allLinksDown(t, gws[0])
	took, ok := waitFor(5*time.Second, func() bool {
		return !links["b"].Peers()["a"].Alive && !links["c"].Peers()["a"].Alive
	})
	if !ok {
		t.Fatalf("a still alive %s after its links went down", took)
	}
	t.Logf("scenario=node_loss detect_ms=%d goal_ms=%d", took.Milliseconds(), testDeadAfter.Milliseconds())
	if took > 2*testDeadAfter {
		t.Errorf("detection took %s, more than 2x DeadAfter %s", took, testDeadAfter)
	}
	if _, ok := waitFor(2*testDeadAfter, func() bool { v := links["b"].Peers()["c"]; return v.Alive && v.AcksMe }); !ok {
		t.Errorf("b lost c when a went down: %+v", links["b"].Peers()["c"])
	}
}
