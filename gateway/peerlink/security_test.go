package peerlink

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// TestForgedAndForeignMessagesChangeNothing sends a's channel heartbeats
// from an intruder namespace: with a wrong key, with the right key from an
// address that is no configured peer, with the right key and an unknown
// name, with the right key impersonating b from another address, a
// memberlist join, a payload that is no heartbeat, and another cluster's
// label. a's view must not move, and every kind is counted.
func TestForgedAndForeignMessagesChangeNothing(t *testing.T) {
	gws := underlay(t, "a", "b", "c", "m", "d")
	a, b, c, m, d := gws[0], gws[1], gws[2], gws[3], gws[4]
	// d's address is configured at a as gateway d, whose agent is down:
	// packets from it pass a's address filter and reach memberlist. m's
	// address is configured nowhere.
	dAddr := d.addr
	links := map[string]*Link{}
	for _, g := range []*gateway{a, b, c} {
		links[g.name] = g.start(t, Config{})
	}
	aPeers := peersOf(a, []*gateway{a, b, c})
	aPeers["d"] = netip.AddrPortFrom(dAddr, DefaultPort)
	mustSetPeers(t, links["a"], aPeers)
	mustSetPeers(t, links["b"], peersOf(b, []*gateway{a, b, c}))
	mustSetPeers(t, links["c"], peersOf(c, []*gateway{a, b, c}))
	mustSetClaims(t, links["a"], map[string]Claim{"s1": {Holding: true, Epoch: 2}})
	mustSetClaims(t, links["b"], map[string]Claim{"s1": {Epoch: 1}})
	mustSetClaims(t, links["c"], map[string]Claim{"s1": {Epoch: 1}})
	// What the intruders try to change: b's and c's claims (to a higher
	// epoch), d's aliveness and claims (d is never heard), new members.
	// Aliveness of b and c is checked before and after, not during: a
	// loaded machine may stall this process past DeadAfter, which says
	// nothing about the intruders.
	unchanged := func() bool {
		v := links["a"].Peers()
		return len(v) == 3 && maps.Equal(v["b"].Claims, map[string]Claim{"s1": {Epoch: 1}}) &&
			maps.Equal(v["c"].Claims, map[string]Claim{"s1": {Epoch: 1}}) &&
			!v["d"].Alive && v["d"].LastHeard.IsZero() && len(v["d"].Claims) == 0
	}
	want := func() bool {
		v := links["a"].Peers()
		return unchanged() && v["b"].Alive && v["b"].AcksMe && v["c"].Alive && v["c"].AcksMe
	}
	if _, ok := waitFor(5*time.Second, want); !ok {
		t.Fatalf("a's view before the attack: %+v", links["a"].Peers())
	}
	before := links["a"].Stats()

	toA := map[string]netip.AddrPort{"a": a.addrPort()}
	grab := map[string]Claim{"s1": {Holding: true, Epoch: 99}}
	wrongKey := []byte("fedcba9876543210fedcba9876543210")
	intruders := []Config{
		{Name: "d", BindAddr: dAddr, Key: wrongKey},                    // → decrypt
		{Name: "d", BindAddr: m.addr},                                  // → unknown_addr
		{Name: "mallory", BindAddr: dAddr, Port: DefaultPort + 1},      // → unknown_name
		{Name: "b", BindAddr: dAddr, Port: DefaultPort + 2},            // → addr_mismatch
		{Name: "mallory-join", BindAddr: dAddr, Port: DefaultPort + 3}, // → member (join refused)
	}
	var joiner *Link
	for i, cfg := range intruders {
		host := d
		if cfg.BindAddr == m.addr {
			host = m
		}
		l := host.start(t, cfg)
		mustSetPeers(t, l, toA)
		mustSetClaims(t, l, grab)
		if i == len(intruders)-1 {
			joiner = l
		}
	}
	// A full memberlist join (TCP push/pull) from the configured address of d.
	var joinErr error
	if err := d.ns.Do(func() error {
		_, joinErr = joiner.ml.Join([]string{a.addrPort().String()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("intruder join: %v", joinErr)
	// Raw memberlist senders from d's address: the right key and label with
	// a payload that is no heartbeat, and the right key under another label.
	garbage := rawMemberlist(t, d, DefaultPort+4, Label)
	foreign := rawMemberlist(t, d, DefaultPort+5, "another-cluster")
	for i := 0; i < 5; i++ {
		to := memberlist.Address{Addr: a.addrPort().String(), Name: "a"}
		if err := garbage.SendToAddress(to, []byte("not a heartbeat")); err != nil {
			t.Fatalf("raw send: %v", err)
		}
		if err := foreign.SendToAddress(to, []byte(`{"v":1,"f":"d"}`)); err != nil {
			t.Fatalf("raw send: %v", err)
		}
		time.Sleep(testHeartbeat)
	}

	if !holdsFor(20*testHeartbeat, unchanged) {
		t.Fatalf("an intruder changed a's view: %+v", links["a"].Peers())
	}
	if _, ok := waitFor(time.Second, want); !ok {
		t.Fatalf("a lost its genuine peers during the attack: %+v", links["a"].Peers())
	}
	if n := links["a"].ml.NumMembers(); n != 1 {
		t.Errorf("a's memberlist has %d alive members, want only itself: %v", n, links["a"].ml.Members())
	}
	after := links["a"].Stats()
	for _, reason := range []string{DropDecrypt, DropUnknownAddr, DropUnknownName, DropAddrMismatch, DropMember, DropDecode, DropLabel} {
		n := after.Dropped[reason] - before.Dropped[reason]
		t.Logf("dropped_%s=%d", reason, n)
		if n == 0 {
			t.Errorf("no %s drop counted at a", reason)
		}
	}
	// The same counts as Prometheus metrics.
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Collector(links["a"]))
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	series := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, lp := range m.GetLabel() {
				key += "," + lp.GetName() + "=" + lp.GetValue()
			}
			series[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for reason, n := range after.Dropped {
		if got := series["netbridge_peerlink_dropped_total,reason="+reason]; got < float64(n) {
			t.Errorf("metric dropped_total{reason=%s} = %v, Stats said %d", reason, got, n)
		}
	}
	if v, ok := series["netbridge_peerlink_peer_alive,peer=d"]; !ok || v != 0 {
		t.Errorf("metric peer_alive{peer=d} = %v (present %v), want 0", v, ok)
	}
	// The genuine peers kept being accepted all along.
	if after.Accepted-before.Accepted < 20 {
		t.Errorf("a accepted only %d genuine heartbeats during the attack", after.Accepted-before.Accepted)
	}
}

// TestReplayedPacketsChangeNothing captures the real encrypted datagrams
// from a to b on b's interface (AF_PACKET) and sends them to b again from
// a's address, first while a is alive and has changed its claim since, then
// while a is cut off: b's view of a does not move, every replay is counted.
func TestReplayedPacketsChangeNothing(t *testing.T) {
	gws := underlay(t, "a", "b")
	a, b := gws[0], gws[1]
	la, lb := a.start(t, Config{}), b.start(t, Config{})
	mustSetPeers(t, la, peersOf(a, gws))
	mustSetPeers(t, lb, peersOf(b, gws))
	holding := map[string]Claim{"s1": {Holding: true, Epoch: 5}}
	mustSetClaims(t, la, holding)
	if _, ok := waitFor(5*time.Second, func() bool {
		v := lb.Peers()["a"]
		return v.Alive && v.AcksMe && maps.Equal(v.Claims, holding)
	}); !ok {
		t.Fatalf("b never saw a: %+v", lb.Peers()["a"])
	}

	captured := capture(t, b, a.addrPort(), b.addrPort(), 15*testHeartbeat)
	if len(captured) < 10 {
		t.Fatalf("captured only %d datagrams from a in %s", len(captured), 15*testHeartbeat)
	}
	yielded := map[string]Claim{"s1": {Epoch: 5}}
	mustSetClaims(t, la, yielded)
	if _, ok := waitFor(time.Second, func() bool { return maps.Equal(lb.Peers()["a"].Claims, yielded) }); !ok {
		t.Fatalf("b did not see a yield")
	}

	// a alive: the replayed "holding" datagrams must not bring the claim back.
	before := lb.Stats()
	replay(t, a, b.addrPort(), captured)
	if !holdsFor(2*testHeartbeat, func() bool { return maps.Equal(lb.Peers()["a"].Claims, yielded) }) {
		t.Fatalf("replay changed b's view of a: %+v", lb.Peers()["a"])
	}
	mid := lb.Stats()
	t.Logf("replayed=%d dropped_stale=%d", len(captured), mid.Dropped[DropStale]-before.Dropped[DropStale])
	// Real heartbeats may add a stale drop or two: sends from two threads
	// can be reordered by the veth's per-CPU queues.
	if got := mid.Dropped[DropStale] - before.Dropped[DropStale]; got < uint64(len(captured)) {
		t.Errorf("b counted %d stale drops for %d replayed datagrams", got, len(captured))
	}

	// a cut off from b (its real heartbeats, from port 7946, are dropped;
	// the replays come from another port of a's address): a stays dead.
	dropFrom(t, b, a.addr, DefaultPort)
	if _, ok := waitFor(time.Second, func() bool { return !lb.Peers()["a"].Alive }); !ok {
		t.Fatalf("b still sees a alive after the cut")
	}
	mid = lb.Stats()
	replay(t, a, b.addrPort(), captured)
	if !holdsFor(2*testHeartbeat, func() bool {
		v := lb.Peers()["a"]
		return !v.Alive && maps.Equal(v.Claims, yielded)
	}) {
		t.Fatalf("replay revived a at b: %+v", lb.Peers()["a"])
	}
	end := lb.Stats()
	if got := end.Dropped[DropStale] - mid.Dropped[DropStale]; got != uint64(len(captured)) {
		t.Errorf("b counted %d stale drops for %d datagrams replayed to a dead peer", got, len(captured))
	}
	if end.Accepted != mid.Accepted {
		t.Errorf("b accepted %d messages while a was cut off", end.Accepted-mid.Accepted)
	}
	if end.Dropped[DropDecrypt] != before.Dropped[DropDecrypt] {
		t.Errorf("replayed datagrams failed decryption: they were not the real ones")
	}
}

func mustSetPeers(t *testing.T, l *Link, peers map[string]netip.AddrPort) {
	t.Helper()
	if err := l.SetPeers(peers); err != nil {
		t.Fatal(err)
	}
}

// capture records, for d, the UDP payloads from src to dst that arrive on
// g's eth0, with an AF_PACKET socket in g's namespace.
func capture(t *testing.T, g *gateway, src, dst netip.AddrPort, d time.Duration) [][]byte {
	t.Helper()
	proto := int(htons(unix.ETH_P_IP))
	var fd int
	err := g.ns.Do(func() error {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, proto); err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifc.Index})
	})
	if err != nil {
		t.Fatalf("capture in %s: %v", g.ns.Name, err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(10 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatalf("SO_RCVTIMEO: %v", err)
	}
	var out [][]byte
	buf := make([]byte, 65536)
	for end := time.Now().Add(d); time.Now().Before(end); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // timeout
		}
		p := buf[:n]
		if n < 28 || p[0]>>4 != 4 || p[9] != unix.IPPROTO_UDP {
			continue
		}
		ihl := int(p[0]&0x0f) * 4
		if n < ihl+8 || netip.AddrFrom4([4]byte(p[12:16])) != src.Addr() || netip.AddrFrom4([4]byte(p[16:20])) != dst.Addr() ||
			binary.BigEndian.Uint16(p[ihl:]) != src.Port() || binary.BigEndian.Uint16(p[ihl+2:]) != dst.Port() {
			continue
		}
		out = append(out, append([]byte(nil), p[ihl+8:]...))
	}
	return out
}

// replay sends the datagrams to dst from g's address (another port than
// the channel's), one per 5 ms.
func replay(t *testing.T, g *gateway, dst netip.AddrPort, datagrams [][]byte) {
	t.Helper()
	var conn *net.UDPConn
	err := g.ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(g.addr, 0)))
		return err
	})
	if err != nil {
		t.Fatalf("replay socket in %s: %v", g.ns.Name, err)
	}
	defer conn.Close()
	var once sync.Once
	for _, d := range datagrams {
		if _, err := conn.WriteToUDPAddrPort(d, dst); err != nil {
			once.Do(func() { t.Errorf("replay to %s: %v", dst, err) })
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestKeyRotationKeepsPeers rotates the shared key with RotateKey while
// two gateways talk, the second getting the new key a while after the
// first (kubelet updates each node's Secret on its own schedule): no
// message fails authentication, the peers stay alive and acked, the first
// keeps encrypting with the old key until the second accepts the new one,
// and afterwards the old key is refused.
func TestKeyRotationKeepsPeers(t *testing.T) {
	gws := underlay(t, "a", "b", "m")
	a, b, m := gws[0], gws[1], gws[2]
	la, lb := a.start(t, Config{}), b.start(t, Config{})
	mustSetPeers(t, la, peersOf(a, gws[:2]))
	mustSetPeers(t, lb, peersOf(b, gws[:2]))
	both := func() bool {
		va, vb := la.Peers()["b"], lb.Peers()["a"]
		return va.Alive && va.AcksMe && vb.Alive && vb.AcksMe
	}
	if _, ok := waitFor(5*time.Second, both); !ok {
		t.Fatalf("a and b never saw each other")
	}
	if err := la.RotateKey(make([]byte, 7)); err == nil {
		t.Fatalf("RotateKey accepted a 7-byte key")
	}
	oldKey, newKey := testKey, []byte("a fresh 32-byte key for rotation")
	// What follows the peer key (the loop probe's key) is told each step.
	var hookMu sync.Mutex
	var steps []string
	name := func(k []byte) string {
		switch {
		case bytes.Equal(k, oldKey):
			return "old"
		case bytes.Equal(k, newKey):
			return "new"
		}
		return "?"
	}
	la.OnKeys(func(use []byte, accept [][]byte) {
		var acc []string
		for _, k := range accept {
			acc = append(acc, name(k))
		}
		sort.Strings(acc)
		hookMu.Lock()
		if st := "use " + name(use) + " accept " + strings.Join(acc, ","); len(steps) == 0 || steps[len(steps)-1] != st {
			steps = append(steps, st)
		}
		hookMu.Unlock()
	})
	if err := la.RotateKey(newKey); err != nil {
		t.Fatal(err)
	}
	// b lags: a accepts both and must keep encrypting with the old key.
	frac := mostly(20*testHeartbeat, both)
	t.Logf("rotation_step=%q peers_ok_pct=%.0f", "a accepts new, b not yet", 100*frac)
	if !bytes.Equal(la.keyring.GetPrimaryKey(), oldKey) {
		t.Fatalf("a encrypts with the new key before b accepts it")
	}
	if err := lb.RotateKey(newKey); err != nil {
		t.Fatal(err)
	}
	done := func() bool {
		for _, l := range []*Link{la, lb} {
			ks := l.keyring.GetKeys()
			if len(ks) != 1 || !bytes.Equal(ks[0], newKey) {
				return false
			}
		}
		return true
	}
	took, ok := waitFor(5*time.Second, done)
	if !ok {
		t.Fatalf("rotation did not complete: a %d keys, b %d keys", len(la.keyring.GetKeys()), len(lb.keyring.GetKeys()))
	}
	t.Logf("rotation_complete_ms=%d", took.Milliseconds())
	hookMu.Lock()
	got := strings.Join(steps, "; ")
	hookMu.Unlock()
	if want := "use old accept old; use old accept new,old; use new accept new,old; use new accept new"; got != want {
		t.Errorf("OnKeys saw %q, want %q", got, want)
	}
	if _, ok := waitFor(time.Second, both); !ok {
		t.Errorf("after the rotation a and b do not see each other")
	}
	for _, l := range []*Link{la, lb} {
		if n := l.Stats().Dropped[DropDecrypt]; n != 0 {
			t.Errorf("%d messages failed authentication during the rotation", n)
		}
	}
	// A gateway still on the old key is refused. It must send from b's
	// address to get past the address filter: it takes b's place.
	_ = lb.Close()
	if _, ok := waitFor(time.Second, func() bool { return !la.Peers()["b"].Alive }); !ok {
		t.Fatalf("b still alive at a after Close")
	}
	b.ns.Run(t, "ip", "addr", "del", b.addr.String()+"/24", "dev", "eth0")
	m.ns.Run(t, "ip", "addr", "add", b.addr.String()+"/24", "dev", "eth0")
	stale := m.start(t, Config{Name: "b", BindAddr: b.addr, Key: oldKey})
	mustSetPeers(t, stale, map[string]netip.AddrPort{"a": a.addrPort()})
	before := la.Stats().Dropped[DropDecrypt]
	if mostly(6*testHeartbeat, func() bool { return !la.Peers()["b"].Alive }) < 1 {
		t.Errorf("a gateway on the old key was heard")
	}
	if la.Stats().Dropped[DropDecrypt] == before {
		t.Errorf("old-key messages not counted as decrypt drops")
	}
}

func mustSetClaims(t *testing.T, l *Link, claims map[string]Claim) {
	t.Helper()
	if err := l.SetClaims(claims); err != nil {
		t.Fatal(err)
	}
}

// rawMemberlist is a bare memberlist node in g's namespace, with the right
// key, sending whatever the test wants.
func rawMemberlist(t *testing.T, g *gateway, port int, label string) *memberlist.Memberlist {
	t.Helper()
	var ml *memberlist.Memberlist
	err := g.ns.Do(func() error {
		mc := memberlist.DefaultLANConfig()
		mc.Name = fmt.Sprintf("raw-%d", port)
		mc.BindAddr, mc.BindPort = g.addr.String(), port
		mc.AdvertiseAddr, mc.AdvertisePort = g.addr.String(), port
		mc.SecretKey = testKey
		mc.Label = label
		mc.LogOutput = io.Discard
		var err error
		ml, err = memberlist.Create(mc)
		return err
	})
	if err != nil {
		t.Fatalf("raw memberlist in %s: %v", g.ns.Name, err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	return ml
}
