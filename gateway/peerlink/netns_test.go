package peerlink

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// Test timings: a heartbeat every 50 ms, dead after three missed.
const (
	testHeartbeat = 50 * time.Millisecond
	testDeadAfter = 150 * time.Millisecond
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

// gateway is one namespace on the test underlay.
type gateway struct {
	name string
	ns   *netnstest.NS
	addr netip.Addr
}

func (g *gateway) addrPort() netip.AddrPort { return netip.AddrPortFrom(g.addr, DefaultPort) }

// underlay builds one namespace per name, each with eth0 on 10.77.0.0/24
// (addresses .1, .2, ... in order) plugged into a Linux bridge in a switch
// namespace: the gateways' VTEP network.
func underlay(t *testing.T, names ...string) []*gateway {
	t.Helper()
	sw := netnstest.New(t, "plsw")
	sw.Run(t, "ip", "link", "add", "br0", "type", "bridge")
	sw.Run(t, "ip", "link", "set", "br0", "up")
	var gws []*gateway
	for i, name := range names {
		g := &gateway{name: name, ns: netnstest.New(t, "pl"+name), addr: netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 1)})}
		port := fmt.Sprintf("p%d", i)
		netnstest.Veth(t, g.ns, "eth0", sw, port)
		sw.Run(t, "ip", "link", "set", port, "master", "br0")
		g.ns.Run(t, "ip", "addr", "add", g.addr.String()+"/24", "dev", "eth0")
		gws = append(gws, g)
	}
	return gws
}

// addAddr gives g a further address on eth0.
func (g *gateway) addAddr(t *testing.T, a netip.Addr) {
	t.Helper()
	g.ns.Run(t, "ip", "addr", "add", a.String()+"/24", "dev", "eth0")
}

// start runs a Link inside g's namespace (its sockets stay there).
func (g *gateway) start(t *testing.T, cfg Config) *Link {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = g.name
	}
	if !cfg.BindAddr.IsValid() {
		cfg.BindAddr = g.addr
	}
	if cfg.Key == nil {
		cfg.Key = testKey
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval, cfg.DeadAfter = testHeartbeat, testDeadAfter
	}
	if cfg.Log == nil {
		cfg.Log = testLog(t).With(zap.String("gw", cfg.Name))
	}
	var l *Link
	err := g.ns.Do(func() error {
		var err error
		l, err = Start(context.Background(), cfg)
		return err
	})
	if err != nil {
		t.Fatalf("start link %s in %s: %v", cfg.Name, g.ns.Name, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// peersOf maps every gateway but self to its address.
func peersOf(self *gateway, all []*gateway) map[string]netip.AddrPort {
	out := map[string]netip.AddrPort{}
	for _, g := range all {
		if g != self {
			out[g.name] = g.addrPort()
		}
	}
	return out
}

// testLog logs to t at info level until the test's cleanups are done:
// memberlist's goroutines may still log a line after Shutdown, and t.Log
// after the test has ended panics.
func testLog(t *testing.T) *zap.Logger {
	var done atomic.Bool
	t.Cleanup(func() { done.Store(true) }) // runs after the links' cleanups (LIFO)
	w := zapcore.AddSync(writerFunc(func(p []byte) (int, error) {
		if !done.Load() {
			t.Log(strings.TrimRight(string(p), "\n"))
		}
		return len(p), nil
	}))
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, w, zapcore.InfoLevel))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var dropTables atomic.Int64

// dropFrom installs, in g's namespace, an nftables input rule that drops
// IPv4 packets from src (only those from UDP source port sport when it is
// not 0). The returned func removes it. Packets are dropped, never refused:
// the sender sees nothing.
func dropFrom(t *testing.T, g *gateway, src netip.Addr, sport uint16) (undo func()) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(int(g.ns.NsHandle)))
	if err != nil {
		t.Fatalf("nftables in %s: %v", g.ns.Name, err)
	}
	table := &nftables.Table{Name: fmt.Sprintf("pl_drop_%d", dropTables.Add(1)), Family: nftables.TableFamilyINet}
	conn.AddTable(table)
	policy := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{Name: "input", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	src4 := src.As4()
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src4[:]},
	}
	if sport != 0 {
		exprs = append(exprs,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, sport)},
		)
	}
	exprs = append(exprs, &expr.Verdict{Kind: expr.VerdictDrop})
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: exprs})
	if err := conn.Flush(); err != nil {
		t.Fatalf("install drop of %s in %s: %v", src, g.ns.Name, err)
	}
	removed := false
	undo = func() {
		if removed {
			return
		}
		removed = true
		conn.DelTable(table)
		if err := conn.Flush(); err != nil {
			t.Errorf("remove drop of %s in %s: %v", src, g.ns.Name, err)
		}
	}
	t.Cleanup(undo)
	return undo
}

// allLinksDown sets every link of g's namespace down in one go: the node
// has lost power as far as the network can tell.
func allLinksDown(t *testing.T, g *gateway) {
	t.Helper()
	links, err := g.ns.Handle.LinkList()
	if err != nil {
		t.Fatalf("links of %s: %v", g.ns.Name, err)
	}
	for _, l := range links {
		if err := g.ns.Handle.LinkSetDown(l); err != nil {
			t.Fatalf("set %s down in %s: %v", l.Attrs().Name, g.ns.Name, err)
		}
	}
}

// waitFor polls cond every 2 ms until it holds or timeout passes, and
// returns how long that took.
func waitFor(timeout time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// mostly samples cond every 5 ms for d and returns the fraction of samples
// where it held. For views of parties a fault does not involve: a loaded
// test machine may stall this whole process past DeadAfter, which makes
// everyone look dead for a moment and says nothing about the code.
func mostly(d time.Duration, cond func() bool) float64 {
	var n, ok int
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		n++
		if cond() {
			ok++
		}
	}
	if n == 0 {
		return 0
	}
	return float64(ok) / float64(n)
}

// holdsFor checks cond every 5 ms for d; it returns false at the first miss.
func holdsFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if !cond() {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
