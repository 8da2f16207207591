// Package frrtest runs a real FRR (zebra + bgpd, and bfdd on request; FRR
// 8.4 from Debian's `frr` package) inside a network namespace that the test created, for
// integration tests that need a real BGP peer.
//
//	r := frrtest.Start(t, "dc-1a2b", frrtest.Config{Text: `frr defaults datacenter
//	router bgp 65001
//	 no bgp ebgp-requires-policy
//	 neighbor 100.64.3.1 remote-as 65000
//	`})
//	out, err := r.Vtysh("show bgp summary")
//
// Every instance has its own FRR path space (-N), config dir
// /etc/frr/<name> and run dir /var/run/frr/<name> (owned by frr:frr), so
// instances in parallel tests and packages never share sockets or files.
// The daemons are stopped and the directories removed in t.Cleanup; their
// logs are copied into the test log when the test failed.
//
// Prerequisites (the test fails, never skips, when they are missing): root,
// `apt-get install -y frr` (/usr/lib/frr/zebra, /usr/lib/frr/bgpd, vtysh),
// iproute2 (`ip netns exec`).
package frrtest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	zebraBin = "/usr/lib/frr/zebra"
	bgpdBin  = "/usr/lib/frr/bgpd"
	bfddBin  = "/usr/lib/frr/bfdd"
)

// Config is what Start needs besides the namespace.
type Config struct {
	// Text is the complete frr.conf. Start it with `frr defaults
	// datacenter` (short timers) and put `no bgp ebgp-requires-policy` under
	// `router bgp` so that eBGP routes are accepted without a route-map.
	Text string
	// Name of the FRR path space; empty = "frr-" + namespace + random suffix.
	Name string
	// BFD starts bfdd too (before bgpd, which registers its sessions with
	// it). Put the `bfd` block (see BFDPeerConfig) in Text; do not end
	// blocks with `exit` lines: every daemon reads the whole file and bfdd
	// then silently ignores its block.
	BFD bool
}

// BFDPeerConfig returns a `bfd` block for one single-hop peer with the
// given timers (milliseconds), for Config.Text.
func BFDPeerConfig(peer netip.Addr, rxMs, txMs, mult int) string {
	return fmt.Sprintf("bfd\n peer %s\n  receive-interval %d\n  transmit-interval %d\n  detect-multiplier %d\n !\n!\n", peer, rxMs, txMs, mult)
}

// Router is one running FRR instance.
type Router struct {
	Name    string // FRR path space (-N)
	Netns   string // network namespace it runs in
	confDir string
	runDir  string
	daemons []string // started, in start order
	nl      *netlink.Handle
}

// Start starts zebra and bgpd in namespace ns and waits until vtysh
// answers. The namespace must exist (created by the test).
func Start(t testing.TB, ns string, cfg Config) *Router {
	t.Helper()
	bins := []string{zebraBin, bgpdBin}
	if cfg.BFD {
		bins = append(bins, bfddBin)
	}
	for _, bin := range bins {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("frrtest: %s missing: install FRR 8.4 (apt-get install -y frr): %v", bin, err)
		}
	}
	if _, err := exec.LookPath("vtysh"); err != nil {
		t.Fatalf("frrtest: vtysh missing: install FRR (apt-get install -y frr): %v", err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("frrtest: FRR needs root (namespaces, /etc/frr, /var/run/frr)")
	}
	name := cfg.Name
	if name == "" {
		name = "frr-" + ns + "-" + randHex(2)
	}
	r := &Router{
		Name:    name,
		Netns:   ns,
		confDir: filepath.Join("/etc/frr", name),
		runDir:  filepath.Join("/var/run/frr", name),
	}
	uid, gid, err := frrIDs()
	if err != nil {
		t.Fatalf("frrtest: %v (is the frr package installed?)", err)
	}
	for _, d := range []string{r.confDir, r.runDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("frrtest: %v", err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatalf("frrtest: chown %s: %v", d, err)
		}
	}
	// vtysh complains on every call without its own (empty) config.
	if err := os.WriteFile(filepath.Join(r.confDir, "vtysh.conf"), nil, 0o640); err != nil {
		t.Fatalf("frrtest: %v", err)
	}
	conf := filepath.Join(r.confDir, "frr.conf")
	if err := os.WriteFile(conf, []byte(cfg.Text), 0o640); err != nil {
		t.Fatalf("frrtest: write %s: %v", conf, err)
	}
	if err := os.Chown(conf, uid, gid); err != nil {
		t.Fatalf("frrtest: chown %s: %v", conf, err)
	}
	// Registered before the daemons start so that a half-started
	// instance is cleaned up too.
	t.Cleanup(func() { r.stop(t) })

	nsh, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("frrtest: namespace %q: %v", ns, err)
	}
	r.nl, err = netlink.NewHandleAt(nsh)
	nsh.Close()
	if err != nil {
		t.Fatalf("frrtest: netlink handle in %q: %v", ns, err)
	}

	r.daemons = []string{"zebra", "bgpd"}
	if cfg.BFD {
		r.daemons = []string{"zebra", "bfdd", "bgpd"}
	}
	for _, d := range r.daemons {
		bin := map[string]string{"zebra": zebraBin, "bgpd": bgpdBin, "bfdd": bfddBin}[d]
		args := []string{"netns", "exec", ns, bin, "-d", "-N", name, "-f", conf,
			"-i", filepath.Join(r.runDir, d+".pid"),
			"-P", "0", // no TCP vty: vtysh uses the unix sockets
			"--log", "file:" + filepath.Join(r.runDir, d+".log"), "--log-level", "informational"}
		if d == "bfdd" {
			// bfdd's control socket lives in the instance's run dir.
			args = append(args, "--bfdctl", filepath.Join(r.runDir, "bfdd.sock"))
		}
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("frrtest: start %s in %s: %v: %s", d, ns, err, out)
		}
		if d == "zebra" {
			// bgpd connects to zebra's zserv socket at start.
			r.waitFile(t, filepath.Join(r.runDir, "zserv.api"), 10*time.Second)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := r.Vtysh("show bgp summary json")
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(out), []byte("{")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("frrtest: %s: vtysh not answering after 15s: %v: %s", name, err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return r
}

func (r *Router) waitFile(t testing.TB, path string, d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("frrtest: %s did not appear within %s", path, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *Router) stop(t testing.TB) {
	for _, d := range []string{"bgpd", "bfdd", "zebra"} {
		pidFile := filepath.Join(r.runDir, d+".pid")
		b, err := os.ReadFile(pidFile)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		_ = syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if syscall.Kill(pid, 0) == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if t.Failed() {
		for _, d := range r.daemons {
			if b, err := os.ReadFile(filepath.Join(r.runDir, d+".log")); err == nil {
				t.Logf("frrtest: %s %s log (last 4 KiB):\n%s", r.Name, d, tail(b, 4096))
			}
		}
	}
	if r.nl != nil {
		r.nl.Close()
	}
	_ = os.RemoveAll(r.confDir)
	_ = os.RemoveAll(r.runDir)
}

// Vtysh runs vtysh commands (each one a -c) in this instance, e.g.
// Vtysh("configure terminal", "router bgp 65001", "network 10.9.0.0/24").
func (r *Router) Vtysh(cmds ...string) ([]byte, error) {
	args := []string{"-N", r.Name}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	var stderr bytes.Buffer
	cmd := exec.Command("vtysh", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("vtysh -N %s %q: %w: %s%s", r.Name, cmds, err, bytes.TrimSpace(out), bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// VtyshJSON runs one `show ... json` command and decodes its output into v.
func (r *Router) VtyshJSON(cmd string, v any) error {
	out, err := r.Vtysh(cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("vtysh %q: decode JSON: %w: %.200s", cmd, err, out)
	}
	return nil
}

// Neighbor is one entry of `show bgp summary json`.
type Neighbor struct {
	RemoteAs     uint32 `json:"remoteAs"`
	State        string `json:"state"` // "Established", "Active", ...
	PfxRcd       int    `json:"pfxRcd"`
	PfxSnt       int    `json:"pfxSnt"`
	MsgRcvd      int    `json:"msgRcvd"`
	MsgSent      int    `json:"msgSent"`
	PeerUptimeMs int64  `json:"peerUptimeMsec"`
}

// Neighbors returns the IPv4-unicast (and, merged, IPv6-unicast) summary,
// keyed by neighbour address.
func (r *Router) Neighbors() (map[string]Neighbor, error) {
	var sum map[string]struct {
		Peers map[string]Neighbor `json:"peers"`
	}
	if err := r.VtyshJSON("show bgp summary json", &sum); err != nil {
		return nil, err
	}
	out := map[string]Neighbor{}
	for _, af := range []string{"ipv6Unicast", "ipv4Unicast"} { // v4 wins
		for a, n := range sum[af].Peers {
			out[a] = n
		}
	}
	return out, nil
}

// BFDPeer is one entry of `show bfd peers json`. Intervals are in
// milliseconds.
type BFDPeer struct {
	Multihop         bool   `json:"multihop"`
	Peer             string `json:"peer"`
	Local            string `json:"local"`
	Interface        string `json:"interface"`
	ID               uint32 `json:"id"`
	RemoteID         uint32 `json:"remote-id"`
	Status           string `json:"status"` // "up", "down", "init", "shutdown"
	Uptime           int64  `json:"uptime"`
	Downtime         int64  `json:"downtime"`
	Diagnostic       string `json:"diagnostic"`
	RemoteDiagnostic string `json:"remote-diagnostic"`
	ReceiveInterval  int    `json:"receive-interval"`
	TransmitInterval int    `json:"transmit-interval"`
	DetectMultiplier int    `json:"detect-multiplier"`
	RemoteReceive    int    `json:"remote-receive-interval"`
	RemoteTransmit   int    `json:"remote-transmit-interval"`
	RemoteDetectMult int    `json:"remote-detect-multiplier"`
}

// BFDPeers returns `show bfd peers json`, keyed by peer address.
func (r *Router) BFDPeers() (map[string]BFDPeer, error) {
	var ps []BFDPeer
	if err := r.VtyshJSON("show bfd peers json", &ps); err != nil {
		return nil, err
	}
	out := make(map[string]BFDPeer, len(ps))
	for _, p := range ps {
		out[p.Peer] = p
	}
	return out, nil
}

// BFDCounters is one entry of `show bfd peers counters json`.
type BFDCounters struct {
	Peer          string `json:"peer"`
	ControlIn     uint64 `json:"control-packet-input"`
	ControlOut    uint64 `json:"control-packet-output"`
	SessionUp     uint64 `json:"session-up"`
	SessionDown   uint64 `json:"session-down"`
	ZebraNotifies uint64 `json:"zebra-notifications"`
}

// BFDPeerCounters returns `show bfd peers counters json`, keyed by peer.
func (r *Router) BFDPeerCounters() (map[string]BFDCounters, error) {
	var ps []BFDCounters
	if err := r.VtyshJSON("show bfd peers counters json", &ps); err != nil {
		return nil, err
	}
	out := make(map[string]BFDCounters, len(ps))
	for _, p := range ps {
		out[p.Peer] = p
	}
	return out, nil
}

// Path is one path of a BGP route, from `show bgp ... PREFIX json`.
type Path struct {
	// Version is the BGP table version at which this path last changed:
	// use it, not LastUpdate (whose epoch wobbles by a second), to prove a
	// path was not touched.
	Version   int64  `json:"version"`
	Valid     bool   `json:"valid"`
	Stale     bool   `json:"stale"`
	Med       *int64 `json:"metric"`
	LocalPref *int64 `json:"locPrf"`
	ASPath    struct {
		String string `json:"string"`
	} `json:"aspath"`
	Community struct {
		String string `json:"string"`
	} `json:"community"`
	LargeCommunity struct {
		String string `json:"string"`
	} `json:"largeCommunity"`
	LastUpdate struct {
		Epoch int64 `json:"epoch"`
	} `json:"lastUpdate"`
	Nexthops []struct {
		IP string `json:"ip"`
	} `json:"nexthops"`
	Bestpath struct {
		Overall bool `json:"overall"`
	} `json:"bestpath"`
}

// Route returns the paths FRR has for exactly prefix p (nil when none).
func (r *Router) Route(p netip.Prefix) ([]Path, error) {
	fam := "ipv4"
	if p.Addr().Is6() {
		fam = "ipv6"
	}
	var out struct {
		Prefix string `json:"prefix"`
		Paths  []Path `json:"paths"`
	}
	if err := r.VtyshJSON(fmt.Sprintf("show bgp %s unicast %s json", fam, p), &out); err != nil {
		return nil, err
	}
	if out.Prefix != p.String() {
		return nil, nil // FRR answers {} for an unknown prefix
	}
	return out.Paths, nil
}

// Prefixes returns every prefix in FRR's BGP table of the given family
// ("ipv4" or "ipv6").
func (r *Router) Prefixes(family string) ([]netip.Prefix, error) {
	var out struct {
		Routes map[string]json.RawMessage `json:"routes"`
	}
	if err := r.VtyshJSON("show bgp "+family+" unicast json", &out); err != nil {
		return nil, err
	}
	ps := make([]netip.Prefix, 0, len(out.Routes))
	for k := range out.Routes {
		if p, err := netip.ParsePrefix(k); err == nil {
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// KernelRoutes returns the routes zebra installed from BGP (protocol bgp)
// in the namespace's main table, for family unix.AF_INET or AF_INET6.
func (r *Router) KernelRoutes(family int) ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: unix.RTPROT_BGP, Table: unix.RT_TABLE_MAIN}
	var err error
	for range 3 { // dumps can be interrupted under churn
		var rs []netlink.Route
		rs, err = r.nl.RouteListFiltered(family, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err == nil {
			return rs, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list bgp routes in %s: %w", r.Netns, err)
}

// HasKernelRoute reports whether the namespace's main table has a BGP route
// for exactly p.
func (r *Router) HasKernelRoute(p netip.Prefix) (bool, error) {
	fam := unix.AF_INET
	if p.Addr().Is6() {
		fam = unix.AF_INET6
	}
	rs, err := r.KernelRoutes(fam)
	if err != nil {
		return false, err
	}
	for _, rt := range rs {
		if rt.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(rt.Dst.IP)
		ones, _ := rt.Dst.Mask.Size()
		if ok && netip.PrefixFrom(a.Unmap(), ones) == p {
			return true, nil
		}
	}
	return false, nil
}

// Eventually polls cond every 100 ms until it returns nil or timeout
// passes, then fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func frrIDs() (int, int, error) {
	u, err := user.Lookup("frr")
	if err != nil {
		return 0, 0, fmt.Errorf("user frr: %w", err)
	}
	g, err := user.LookupGroup("frr")
	if err != nil {
		return 0, 0, fmt.Errorf("group frr: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(g.Gid)
	return uid, gid, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
