package peerlink

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

const (
	testDead = 300 * time.Millisecond
	testSkew = 30 * time.Second
)

var (
	t0    = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	addrA = netip.MustParseAddrPort("192.0.2.1:7946")
	addrB = netip.MustParseAddrPort("192.0.2.2:7946")
)

// fromB is a valid message from b to a.
func fromB(boot string, seq uint64, sent time.Time) message {
	return message{V: wireVersion, From: "b", Addr: addrB.String(), To: "a", Boot: boot, Seq: seq, Sent: sent.UnixNano()}
}

func newA() *tracker {
	tr := newTracker("a", "bootA", testDead, testSkew)
	tr.setPeers(map[string]netip.AddrPort{"b": addrB})
	return tr
}

func TestReceiveRefuses(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*message)
		want   string
	}{
		{"accepted", func(*message) {}, ""},
		{"version", func(m *message) { m.V = 2 }, DropVersion},
		{"misdirected", func(m *message) { m.To = "c" }, DropMisdirected},
		{"unknown name", func(m *message) { m.From = "mallory" }, DropUnknownName},
		{"own name", func(m *message) { m.From = "a" }, DropUnknownName},
		{"address of another peer", func(m *message) { m.Addr = addrA.String() }, DropAddrMismatch},
		{"unparsable address", func(m *message) { m.Addr = "b" }, DropAddrMismatch},
		{"sent too early", func(m *message) { m.Sent = t0.Add(-testSkew - time.Millisecond).UnixNano() }, DropSkew},
		{"sent in the future", func(m *message) { m.Sent = t0.Add(testSkew + time.Millisecond).UnixNano() }, DropSkew},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newA()
			m := fromB("bootB", 1, t0)
			m.Claims = map[string]Claim{"s1": {Holding: true, Epoch: 9}}
			c.mutate(&m)
			if got := tr.receive(m, t0, t0); got != c.want {
				t.Fatalf("receive = %q, want %q", got, c.want)
			}
			v := tr.view(t0)["b"]
			if c.want != "" && (v.Alive || len(v.Claims) != 0 || !v.LastHeard.IsZero()) {
				t.Fatalf("a refused message changed the view: %+v", v)
			}
			if c.want == "" && (!v.Alive || v.Claims["s1"] != (Claim{Holding: true, Epoch: 9})) {
				t.Fatalf("accepted message not in the view: %+v", v)
			}
		})
	}
}

func TestReplayOrdering(t *testing.T) {
	tr := newA()
	steps := []struct {
		name string
		m    message
		want string
	}{
		{"first", fromB("boot1", 5, t0), ""},
		{"same seq again", fromB("boot1", 5, t0), DropStale},
		{"older seq", fromB("boot1", 4, t0.Add(time.Second)), DropStale},
		{"newer seq", fromB("boot1", 6, t0.Add(100*time.Millisecond)), ""},
		{"new boot sent later", fromB("boot2", 1, t0.Add(200*time.Millisecond)), ""},
		{"old boot replayed with a higher seq", fromB("boot1", 99, t0.Add(150*time.Millisecond)), DropStale},
		{"third boot sent at the same instant", fromB("boot3", 1, t0.Add(200*time.Millisecond)), DropStale},
		{"current boot continues", fromB("boot2", 2, t0.Add(300*time.Millisecond)), ""},
	}
	for _, s := range steps {
		if got := tr.receive(s.m, t0, t0); got != s.want {
			t.Fatalf("%s: receive = %q, want %q", s.name, got, s.want)
		}
	}
}

func TestAlivenessAndAcks(t *testing.T) {
	tr := newA()
	// a sends seq 1 at t0 and seq 2 at t0+100ms.
	if s := tr.beginRound(t0); s != 1 {
		t.Fatalf("first seq = %d", s)
	}
	tr.beginRound(t0.Add(100 * time.Millisecond))

	// b, at t0+150ms, acks a's seq 1.
	m := fromB("bootB", 1, t0)
	m.Acks = map[string]ack{"a": {Boot: "bootA", Seq: 1}}
	at := t0.Add(150 * time.Millisecond)
	if r := tr.receive(m, at, t0); r != "" {
		t.Fatalf("receive: %s", r)
	}
	v := tr.view(at)["b"]
	if !v.Alive || !v.AcksMe || !v.AckedSent.Equal(t0) {
		t.Fatalf("after ack: %+v", v)
	}
	// AcksMe ends DeadAfter after the send time of the acked message,
	// Alive DeadAfter after the receipt.
	if v := tr.view(t0.Add(testDead)); !v["b"].AcksMe {
		t.Fatalf("AcksMe false at exactly DeadAfter")
	}
	if v := tr.view(t0.Add(testDead + time.Millisecond)); v["b"].AcksMe || !v["b"].Alive {
		t.Fatalf("at send+DeadAfter+1ms want alive, not acking: %+v", v["b"])
	}
	if v := tr.view(at.Add(testDead + time.Millisecond)); v["b"].Alive {
		t.Fatalf("alive after DeadAfter of silence")
	}
	if next := tr.nextFlip(at); !next.Equal(t0.Add(testDead + time.Nanosecond)) {
		t.Fatalf("nextFlip = %s, want acked send + DeadAfter", next.Sub(t0))
	}
	if next := tr.nextFlip(t0.Add(testDead + time.Millisecond)); !next.Equal(at.Add(testDead + time.Nanosecond)) {
		t.Fatalf("nextFlip after ack expiry = %s, want receipt + DeadAfter", next.Sub(t0))
	}
	// The peer grant ends where AcksMe ends, with the stricter DeadAfter.
	if until, ok := tr.peerGrant([]string{"b"}, at); !ok || !until.Equal(t0.Add(testDead)) {
		t.Fatalf("peerGrant = %s %v, want send+DeadAfter", until.Sub(t0), ok)
	}
	if _, ok := tr.peerGrant([]string{"b", "c"}, at); ok {
		t.Fatalf("peerGrant ok with an unknown peer")
	}
	if _, ok := tr.peerGrant(nil, at); ok {
		t.Fatalf("peerGrant ok with no peers")
	}
	if _, ok := tr.peerGrant([]string{"b"}, t0.Add(testDead)); ok {
		t.Fatalf("peerGrant ok at its own deadline")
	}
	strict := fromB("bootB", 9, t0)
	strict.Acks = map[string]ack{"a": {Boot: "bootA", Seq: 2}}
	strict.DeadAfter = int64(100 * time.Millisecond)
	tr2 := newA()
	tr2.beginRound(t0)
	tr2.beginRound(t0.Add(100 * time.Millisecond))
	tr2.receive(strict, t0.Add(120*time.Millisecond), t0)
	if until, ok := tr2.peerGrant([]string{"b"}, t0.Add(120*time.Millisecond)); !ok || !until.Equal(t0.Add(200*time.Millisecond)) {
		t.Fatalf("peerGrant with b's shorter DeadAfter = %s %v, want 200ms", until.Sub(t0), ok)
	}
	if v := tr2.view(t0.Add(120 * time.Millisecond))["b"]; v.DeadAfter != 100*time.Millisecond {
		t.Fatalf("peer's DeadAfter not reported: %s", v.DeadAfter)
	}

	// acks returns what a acknowledges to b in its next heartbeat.
	if got := tr.acks()["b"]; got != (ack{Boot: "bootB", Seq: 1}) {
		t.Fatalf("acks = %+v", got)
	}

	// An ack of another boot of a (a restarted) does not count.
	m = fromB("bootB", 2, t0.Add(time.Millisecond))
	m.Acks = map[string]ack{"a": {Boot: "bootA-before-restart", Seq: 2}}
	tr.receive(m, at, t0)
	if v := tr.view(at)["b"]; v.AcksMe || !v.AckedSent.IsZero() {
		t.Fatalf("ack of another boot counted: %+v", v)
	}
	// An ack of a sequence number too old to be remembered does not count.
	for i := 0; i < 5; i++ {
		tr.beginRound(t0.Add(time.Second + time.Duration(i)*100*time.Millisecond))
	}
	m = fromB("bootB", 3, t0.Add(2*time.Millisecond))
	m.Acks = map[string]ack{"a": {Boot: "bootA", Seq: 2}}
	tr.receive(m, t0.Add(1500*time.Millisecond), t0)
	if v := tr.view(t0.Add(1500 * time.Millisecond))["b"]; v.AcksMe {
		t.Fatalf("ack of a pruned seq counted: %+v", v)
	}
}

func TestSetPeersAndAdmission(t *testing.T) {
	tr := newA()
	tr.receive(fromB("bootB", 1, t0), t0, t0)
	if !tr.addrAllowed(addrB.Addr()) || tr.addrAllowed(netip.MustParseAddr("192.0.2.9")) {
		t.Fatalf("addrAllowed wrong")
	}
	self := addrA.Addr()
	for _, c := range []struct {
		name string
		ip   string
		want bool
	}{{"a", "192.0.2.1", true}, {"a", "192.0.2.9", false}, {"b", "192.0.2.2", true}, {"b", "192.0.2.9", false}, {"mallory", "192.0.2.2", false}} {
		if got := tr.nodeAllowed(c.name, netip.MustParseAddr(c.ip), self); got != c.want {
			t.Errorf("nodeAllowed(%s, %s) = %v, want %v", c.name, c.ip, got, c.want)
		}
	}
	// Same address: the state stays.
	tr.setPeers(map[string]netip.AddrPort{"b": addrB})
	if !tr.view(t0)["b"].Alive {
		t.Fatalf("re-setting the same peers lost the state")
	}
	// New address: what was heard from the old one no longer counts.
	moved := netip.MustParseAddrPort("192.0.2.22:7946")
	tr.setPeers(map[string]netip.AddrPort{"b": moved})
	if v := tr.view(t0)["b"]; v.Alive || v.Addr != moved {
		t.Fatalf("moved peer kept old state: %+v", v)
	}
	tr.setPeers(nil)
	if len(tr.view(t0)) != 0 {
		t.Fatalf("removed peer still in view")
	}
}

func TestSameView(t *testing.T) {
	a := map[string]PeerView{"b": {Addr: addrB, Alive: true, LastHeard: t0, Claims: map[string]Claim{"s": {Holding: true, Epoch: 1}}}}
	b := map[string]PeerView{"b": {Addr: addrB, Alive: true, LastHeard: t0.Add(time.Second), Claims: map[string]Claim{"s": {Holding: true, Epoch: 1}}}}
	if !sameView(a, b) {
		t.Fatalf("timestamps alone must not count as a change")
	}
	b["b"] = PeerView{Addr: addrB, Alive: true, Claims: map[string]Claim{"s": {Holding: true, Epoch: 2}}}
	if sameView(a, b) {
		t.Fatalf("claim change not seen")
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Name: "gw1", BindAddr: netip.MustParseAddr("192.0.2.1"), Key: make([]byte, 32)}
	got, err := ok.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if got.Port != DefaultPort || got.HeartbeatInterval != DefaultHeartbeatInterval || got.DeadAfter != 3*DefaultHeartbeatInterval || got.MaxClockSkew != DefaultMaxClockSkew {
		t.Fatalf("defaults: %+v", got)
	}
	for _, c := range []struct {
		mutate func(*Config)
		field  string
	}{
		{func(c *Config) { c.Name = "" }, "Name"},
		{func(c *Config) { c.BindAddr = netip.Addr{} }, "BindAddr"},
		{func(c *Config) { c.BindAddr = netip.IPv4Unspecified() }, "BindAddr"},
		{func(c *Config) { c.Port = 70000 }, "Port 70000"},
		{func(c *Config) { c.Key = make([]byte, 15) }, "Key is 15 bytes"},
		{func(c *Config) { c.HeartbeatInterval = time.Microsecond }, "HeartbeatInterval 1µs"},
		{func(c *Config) { c.DeadAfter = DefaultHeartbeatInterval }, "DeadAfter 100ms"},
		{func(c *Config) { c.MaxClockSkew = time.Millisecond }, "MaxClockSkew 1ms"},
	} {
		cfg := ok
		cfg.Key = append([]byte(nil), ok.Key...)
		c.mutate(&cfg)
		_, err := cfg.withDefaults()
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("want error naming %q, got %v", c.field, err)
		}
	}
	for _, c := range []struct {
		peers map[string]netip.AddrPort
		want  string
	}{
		{map[string]netip.AddrPort{"gw1": addrB}, "own name"},
		{map[string]netip.AddrPort{"gw2": addrA}, "own address"},
		{map[string]netip.AddrPort{"gw2": addrB, "gw3": addrB}, "share address"},
		{map[string]netip.AddrPort{"gw2": netip.MustParseAddrPort("0.0.0.0:7946")}, `"gw2" has invalid address`},
		{map[string]netip.AddrPort{"": addrB}, "empty name"},
	} {
		if err := validPeers("gw1", addrA, c.peers); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validPeers(%v) = %v, want an error with %q", c.peers, err, c.want)
		}
	}
	if err := validPeers("gw1", addrA, map[string]netip.AddrPort{"gw2": addrB}); err != nil {
		t.Errorf("valid peers refused: %v", err)
	}
}
