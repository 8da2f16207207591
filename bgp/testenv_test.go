package bgp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/netbridge-io/netbridge/internal/frrtest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

const (
	gwASN = 65000
	dcASN = 65001
)

// lab is one test topology: the speaker runs in the test's own (root)
// namespace and reaches FRR in a fresh namespace over a veth pair whose
// addresses exist only on that pair, so no goroutine ever switches
// namespace (GoBGP dials from arbitrary threads).
type lab struct {
	ns           string
	hostIf       string
	dcIf         string
	hostV4, dcV4 netip.Addr
	hostV6, dcV6 netip.Addr
	segV4, segV6 netip.Prefix // "segment subnets": the allowed prefixes
	frr          *frrtest.Router
}

type frrOpts struct {
	ibgp     bool
	password string
	extra    string // lines added under router bgp (after the neighbour)
	extraAF4 string // lines under address-family ipv4 unicast
	// bfd runs bfdd with the documented router snippet
	// (testdata/frr-gateway-bfd.conf) for the gateway's IPv4 address, and
	// for its IPv6 address too when v6 (an IPv6 session) is set.
	bfd bool
	v6  bool
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func randN(n int64) int64 {
	v, _ := rand.Int(rand.Reader, big.NewInt(n))
	return v.Int64()
}

func newLab(t testing.TB, o frrOpts) *lab {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("iproute2 missing (apt-get install -y iproute2): %v", err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	l := &lab{ns: "nbdc-" + id, hostIf: "nb" + id + "h", dcIf: "nb" + id + "d"}
	dcIf := l.dcIf
	// 100.64.0.0/10 (shared address space): never routed here, and each
	// test draws its own /30.
	x, y, z := 64+randN(64), randN(256), randN(64)*4
	l.hostV4 = netip.MustParseAddr(fmt.Sprintf("100.%d.%d.%d", x, y, z+1))
	l.dcV4 = netip.MustParseAddr(fmt.Sprintf("100.%d.%d.%d", x, y, z+2))
	l.hostV6 = netip.MustParseAddr(fmt.Sprintf("fd00:%s:%s::1", id[:4], id[4:]))
	l.dcV6 = netip.MustParseAddr(fmt.Sprintf("fd00:%s:%s::2", id[:4], id[4:]))
	l.segV4 = netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 100+randN(100), randN(256)))
	l.segV6 = netip.MustParsePrefix(fmt.Sprintf("fd10:%s:%s::/64", id[:4], id[4:]))

	run(t, "ip", "netns", "add", l.ns)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", l.hostIf).Run()
		_ = exec.Command("ip", "netns", "del", l.ns).Run()
	})
	run(t, "ip", "link", "add", l.hostIf, "type", "veth", "peer", "name", dcIf)
	run(t, "ip", "link", "set", dcIf, "netns", l.ns)
	run(t, "ip", "addr", "add", l.hostV4.String()+"/30", "dev", l.hostIf)
	run(t, "ip", "-6", "addr", "add", l.hostV6.String()+"/64", "dev", l.hostIf, "nodad")
	run(t, "ip", "link", "set", l.hostIf, "up")
	run(t, "ip", "-n", l.ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", l.ns, "addr", "add", l.dcV4.String()+"/30", "dev", dcIf)
	run(t, "ip", "-n", l.ns, "-6", "addr", "add", l.dcV6.String()+"/64", "dev", dcIf, "nodad")
	run(t, "ip", "-n", l.ns, "link", "set", dcIf, "up")

	remote := gwASN
	local := dcASN
	if o.ibgp {
		local = gwASN
	}
	var c strings.Builder
	c.WriteString("frr defaults datacenter\n!\n")
	if o.bfd {
		gws := [][2]netip.Addr{{l.hostV4, l.dcV4}}
		if o.v6 {
			gws = append(gws, [2]netip.Addr{l.hostV6, l.dcV6})
		}
		// All bfd blocks first, then the router bgp parts.
		var bgpParts strings.Builder
		for _, gw := range gws {
			bfdPart, bgpPart := routerSnippet(t, gw[0], gw[1], dcIf, uint32(remote), uint32(local))
			c.WriteString(bfdPart)
			bgpParts.WriteString(bgpPart)
		}
		c.WriteString(bgpParts.String())
	}
	fmt.Fprintf(&c, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp network import-check\n", local, l.dcV4)
	fmt.Fprintf(&c, " neighbor %s remote-as %d\n", l.hostV4, remote)
	if o.v6 {
		fmt.Fprintf(&c, " neighbor %s remote-as %d\n", l.hostV6, remote)
	}
	if o.password != "" {
		fmt.Fprintf(&c, " neighbor %s password %s\n", l.hostV4, o.password)
	}
	// "GATEWAY" in extra lines stands for the gateway's IPv4 address.
	c.WriteString(strings.ReplaceAll(o.extra, "GATEWAY", l.hostV4.String()))
	fmt.Fprintf(&c, " address-family ipv4 unicast\n%s exit-address-family\n", o.extraAF4)
	fmt.Fprintf(&c, " address-family ipv6 unicast\n  neighbor %s activate\n", l.hostV4)
	if o.v6 {
		fmt.Fprintf(&c, "  neighbor %s activate\n", l.hostV6)
	}
	c.WriteString(" exit-address-family\n!\n")
	l.frr = frrtest.Start(t, l.ns, frrtest.Config{Text: c.String(), Name: "nb" + id, BFD: o.bfd})
	return l
}

// peer is the FRR neighbour as the speaker sees it, with short timers.
func (l *lab) peer(o frrOpts) Peer {
	asn := uint32(dcASN)
	if o.ibgp {
		asn = gwASN
	}
	return Peer{
		Address: l.dcV4, ASN: asn, Password: o.password,
		HoldTime: 9 * time.Second, Keepalive: 3 * time.Second, ConnectRetry: time.Second,
		Description: "frr " + l.ns,
	}
}

func (l *lab) desired(peers []Peer, routes ...Route) Desired {
	return Desired{
		Global:          Global{ASN: gwASN, RouterID: l.hostV4, ListenPort: -1},
		AllowedPrefixes: []netip.Prefix{l.segV4, l.segV6},
		Peers:           peers,
		Routes:          routes,
	}
}

// host returns the n-th host route of the lab's IPv4 segment.
func (l *lab) host(n int) netip.Prefix {
	a := l.segV4.Addr().As4()
	a[3] = byte(n)
	return netip.PrefixFrom(netip.AddrFrom4(a), 32)
}

func (l *lab) host6(n int) netip.Prefix {
	a := l.segV6.Addr().As16()
	a[15] = byte(n)
	return netip.PrefixFrom(netip.AddrFrom16(a), 128)
}

func testLogger(t testing.TB) *zap.Logger {
	if os.Getenv("NB_BGP_DEBUG") != "" {
		return zaptest.NewLogger(t)
	}
	return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
}

func newSpeaker(t testing.TB) *Speaker {
	s := New(testLogger(t))
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return s
}

func waitEstablished(t testing.TB, s *Speaker, addr netip.Addr) {
	t.Helper()
	frrtest.Eventually(t, 30*time.Second, func() error {
		st, err := s.Status(context.Background())
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.Address == addr {
				if p.State == StateEstablished {
					return nil
				}
				return fmt.Errorf("peer %s is %s (%s)", addr, p.State, p.LastError)
			}
		}
		return fmt.Errorf("peer %s not configured", addr)
	})
}

// frrPath waits for FRR to have p and returns its best path.
func (l *lab) frrPath(t testing.TB, p netip.Prefix) frrtest.Path {
	t.Helper()
	var got frrtest.Path
	frrtest.Eventually(t, 20*time.Second, func() error {
		paths, err := l.frr.Route(p)
		if err != nil {
			return err
		}
		if len(paths) == 0 {
			return fmt.Errorf("FRR has no path for %s", p)
		}
		got = paths[0]
		return nil
	})
	return got
}

func (l *lab) waitKernel(t testing.TB, p netip.Prefix, present bool) {
	t.Helper()
	frrtest.Eventually(t, 20*time.Second, func() error {
		ok, err := l.frr.HasKernelRoute(p)
		if err != nil {
			return err
		}
		if ok != present {
			return fmt.Errorf("kernel route %s in %s present=%v, want %v", p, l.ns, ok, present)
		}
		return nil
	})
}

func (l *lab) waitFRRAbsent(t testing.TB, p netip.Prefix) {
	t.Helper()
	frrtest.Eventually(t, 20*time.Second, func() error {
		paths, err := l.frr.Route(p)
		if err != nil {
			return err
		}
		if len(paths) != 0 {
			return fmt.Errorf("FRR still has %s", p)
		}
		return nil
	})
}

// parallel runs integration tests in parallel, except under the race
// detector: GoBGP's StartBgp writes package-level variables
// (table.SelectionOptions, UseMultiplePaths) that another server in the same
// process reads, a race in GoBGP itself that only exists when one process
// runs several servers (tests do, the gateway does not).
func parallel(t *testing.T) {
	if !raceEnabled {
		t.Parallel()
	}
}
