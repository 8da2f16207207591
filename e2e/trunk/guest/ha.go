package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
	"github.com/netbridge-io/netbridge/internal/qemuguest"
	"github.com/netbridge-io/netbridge/internal/qemuguest/inguest"
	"github.com/netbridge-io/netbridge/vlan"
)

// The HA run (TestTrunkHA): two gateways in Kubernetes mode on one trunk,
// the API server on the host. The host puts these files in haDir.
const (
	haDir        = "/etc/ha"
	haKubeconfig = haDir + "/kubeconfig" // server https://127.0.0.1:6443 (apiForwarder)
	haPeerKey    = haDir + "/peer.key"
	haAPI        = haDir + "/api" // host:port of the API server from the guest
	apiLocal     = "127.0.0.1:6443"
	streamEvery  = 20 * time.Millisecond
	// outageGoal is the issue's ≤ 1 s for a failover on the trunk.
	outageGoal = time.Second
)

// gw2VTEP is the second gateway's VTEP (gw1 has gwVTEP).
var gw2VTEP = netip.MustParseAddr("192.0.2.3")

// haGateway is one gateway of the HA run.
type haGateway struct {
	name string
	vtep netip.Addr
	log  string
	cmd  *exec.Cmd
}

// runHA: topology
//
//	hA/hB/hU ── sw (VLAN-aware) ══ trunk-gw1 ══ gw1: eth1 ─┐ ul0
//	                            ══ trunk-gw2 ══ gw2: eth1 ─┤ ul0   node: ulbr ── VXLAN ── vmA, vmB
//	guest eth0 (QEMU user net) ── API server on the host, forwarded into gw1 and gw2
func runHA() bool {
	c := &inguest.Checker{}
	if !c.Check("boot", inguest.Boot()) {
		return true
	}
	if !c.Check("host-link", hostLink()) {
		return true
	}
	raw, err := os.ReadFile(haAPI)
	if !c.Check("ha-files", err) {
		return true
	}
	api := strings.TrimSpace(string(raw))
	ns := map[string]*netnstest.NS{}
	for _, n := range []string{"sw", "gw1", "gw2", "node", "hA", "hB", "hU", "vmA", "vmB"} {
		if ns[n], err = inguest.NewNS(n); !c.Check("netns-"+n, err) {
			return true
		}
	}
	if !c.Check("topology", haTopology(ns)) {
		return true
	}
	if !c.Check("node-vxlan", nodeSide(ns, gwVTEP, gw2VTEP)) {
		return true
	}
	gws := map[string]*haGateway{
		"gw1": {name: "gw1", vtep: gwVTEP, log: "/tmp/gw1.log"},
		"gw2": {name: "gw2", vtep: gw2VTEP, log: "/tmp/gw2.log"},
	}
	for _, g := range gws {
		if !c.Check("api-forward-"+g.name, apiForwarder(ns[g.name], api)) {
			return true
		}
	}
	start := time.Now()
	for _, g := range gws {
		if !c.Check("gateway-start-"+g.name, g.start(ns[g.name])) {
			return true
		}
	}
	defer func() {
		for _, g := range gws {
			g.kill()
		}
	}()
	defer func() {
		if c.Failed {
			for _, g := range gws {
				dumpLogOf(g.log)
			}
		}
	}()
	holders, err := waitHolders(ns, 120*time.Second)
	fmt.Printf("TIME ha_gateways_up_ms=%d\n", time.Since(start).Milliseconds())
	if !c.Check("ha-one-holder-per-segment", err) {
		return true
	}
	fmt.Printf("INFO holders: segment a (VLAN %d) %s, segment b (VLAN %d) %s\n", vidA, holders[vniA], vidB, holders[vniB])

	c.Check("ha-vmA-reaches-vlan100-host", expectHolder(ns, vmA, "10.0.100.1", hA.hw()))
	c.Check("ha-vmB-reaches-vlan200-host", expectHolder(ns, vmB, "10.0.200.1", hB.hw()))
	caps, err := captures(ns)
	if !c.Check("captures", err) {
		return true
	}
	defer func() {
		for _, cp := range caps {
			cp.close()
		}
	}()
	window := 1500 * time.Millisecond
	c.Check("ha-broadcast-crosses-at-most-once-with-two-gateways-on-the-trunk", expectBetween("nb-ha-bcast",
		func() error { return send(ns["hA"], "eth0", broadcastFrame(hA.hw(), "nb-ha-bcast"), 3) }, caps["vmA"], 1, 3, window))
	c.Check("ha-vm-broadcast-crosses-at-most-once-to-the-trunk", expectBetween("nb-ha-vmbcast",
		func() error { return send(ns["vmA"], "eth0", broadcastFrame(vmA.hw(), "nb-ha-vmbcast"), 3) }, caps["hA"], 1, 3, window))

	// The duplicate gate on tagged VLAN 200 from the holder of segment b:
	// it probes from its sub-interface.
	holderB, standbyB := holders[vniB], other(holders[vniB])
	c.Check("ha-dup-gate-active-probes-from-subinterface", waitLogIn(gws[holderB].log, 60*time.Second,
		`"event":"duplicateAddress"`, `"ip":"10.0.200.77"`, `"iface":"`+vlan.VLANName(vniB)+`"`))
	// The standby of segment b has no sub-interface nb-vl-1200: what the
	// gate probes from is the interface it is given (vlan.Segment.VLANSide),
	// which does not exist there, so the probe fails and its IPs stay
	// pending (never cleared, never refused) until it takes over.
	c.Check("ha-dup-gate-standby-has-no-subinterface", noLink(ns[standbyB], vlan.VLANName(vniB)))
	c.Check("ha-dup-gate-standby-probe-fails-on-missing-subinterface", waitLogIn(gws[standbyB].log, 30*time.Second,
		`"event":"probeFailed"`, `"iface":"`+vlan.VLANName(vniB)+`"`))
	c.Check("ha-dup-gate-standby-neither-clears-nor-refuses", logLacksIn(gws[standbyB].log,
		`"event":"addressFree","ip":"10.0.200.`, `"event":"duplicateAddress"`))
	c.Check("ha-dup-gate-standby-sends-no-arp-on-the-vlan", standbyProbesNothing(ns, gws[standbyB]))

	// Failover 1: kill -9 of segment a's holder.
	victim := holders[vniA]
	res, err := failover(ns, victim, "trunk_failover_kill9", func() error {
		return gws[victim].cmd.Process.Signal(syscall.SIGKILL)
	})
	c.Check("ha-kill9-fence-and-takeover", err)
	c.Check("ha-kill9-seen-at-most-once", atMostOnce(res))
	c.Check("ha-kill9-outage-within-1s", within(res, outageGoal))
	c.Check("ha-kill9-dead-gateway-subinterface-still-enslaved", enslaved(ns[victim], vlan.VLANName(vniA)))
	// The new holder of b probes the duplicate from its sub-interface
	// once it holds the segment (it could not while standby).
	newB := other(victim)
	c.Check("ha-dup-gate-new-holder-probes-from-subinterface", waitLogIn(gws[newB].log, 60*time.Second,
		`"event":"duplicateAddress"`, `"ip":"10.0.200.77"`, `"iface":"`+vlan.VLANName(vniB)+`"`))

	// Restart the killed gateway: it comes back as standby (no preemption).
	gws[victim].kill()
	if !c.Check("ha-restarted-gateway-starts", gws[victim].start(ns[victim])) {
		return true
	}
	c.Check("ha-restarted-gateway-makes-no-second-bridge", noSecondBridge(ns, victim))

	// Failover 2: node loss of the holder: every link down and the agent
	// killed at once.
	victim2 := newB
	res, err = failover(ns, victim2, "trunk_failover_node_loss", func() error {
		errc := make(chan error, 1)
		go func() { errc <- gws[victim2].cmd.Process.Signal(syscall.SIGKILL) }()
		err := linksDown(ns[victim2], "eth1", "ul0")
		return errors.Join(err, <-errc)
	})
	c.Check("ha-node-loss-takeover", err)
	c.Check("ha-node-loss-seen-at-most-once", atMostOnce(res))
	c.Check("ha-node-loss-outage-within-1s", within(res, outageGoal))
	return c.Failed
}

// hostLink brings up the guest's NIC on QEMU's user network.
func hostLink() error {
	l, err := netlink.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("guest NIC (e1000 on QEMU user net): %w", err)
	}
	a, _ := netlink.ParseAddr(qemuguest.GuestIP + "/24")
	if err := netlink.AddrAdd(l, a); err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// apiForwarder listens on 127.0.0.1:6443 inside ns and forwards to the
// host's API server from the guest's root namespace (the listening socket
// belongs to ns, the dialled one to the thread that dials: root).
func apiForwarder(ns *netnstest.NS, api string) error {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", apiLocal); return err }); err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", api, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	return nil
}

func haTopology(ns map[string]*netnstest.NS) error {
	node := ns["node"].Handle
	if err := node.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "ulbr"}}); err != nil {
		return fmt.Errorf("underlay bridge: %w", err)
	}
	br, err := node.LinkByName("ulbr")
	if err != nil {
		return err
	}
	for _, g := range []struct {
		name string
		vtep netip.Addr
	}{{"gw1", gwVTEP}, {"gw2", gw2VTEP}} {
		port := "ul-" + g.name
		if err := veth(ns["node"], port, ns[g.name], "ul0", ""); err != nil {
			return err
		}
		l, err := node.LinkByName(port)
		if err != nil {
			return err
		}
		if err := node.LinkSetMaster(l, br); err != nil {
			return err
		}
		if err := addAddrs(ns[g.name], "ul0", g.vtep.String()+"/24"); err != nil {
			return err
		}
	}
	if err := addAddrs(ns["node"], "ulbr", nodeVTEP.String()+"/24"); err != nil {
		return err
	}
	if err := up(node, "ulbr"); err != nil {
		return err
	}
	return legacySwitch(ns, map[string]string{"trunk-gw1": "gw1", "trunk-gw2": "gw2"})
}

func (g *haGateway) start(ns *netnstest.NS) error {
	logf, err := os.OpenFile(g.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// The product's Lease timings (15 s / 10 s / 2 s): the peer channel
	// decides a failover; the Lease only has to survive a slow TCG guest.
	// The e2e lab's heartbeat (50 ms, e2e.PeerHeartbeat): with 100 ms the
	// kill -9 takeover took 1.3 s here.
	cmd := exec.Command(gatewayBin, "--role=gateway", "--node-name="+g.name, "--kubeconfig="+haKubeconfig,
		"--namespace=netbridge-system", "--vtep="+g.vtep.String(), "--peer-key-file="+haPeerKey, "--peer-heartbeat=50ms",
		"--metrics-bind-address=127.0.0.1:9650", "--health-probe-bind-address=",
		"--probe-wait=1500ms", "--duplicate-backoff-min=500ms", "--duplicate-backoff-max=2s",
		"--reachability-interval=2s", "--graceful-shutdown-wait=1s", "--log-level=info")
	cmd.Stdout, cmd.Stderr = logf, logf
	err = ns.Do(cmd.Start)
	logf.Close()
	if err != nil {
		return err
	}
	g.cmd = cmd
	go func() { _ = cmd.Wait() }() // reap
	return nil
}

func (g *haGateway) kill() {
	if g.cmd != nil && g.cmd.Process != nil {
		_ = g.cmd.Process.Signal(syscall.SIGKILL)
	}
}

func other(gw string) string {
	if gw == "gw1" {
		return "gw2"
	}
	return "gw1"
}

// attachedOn tells which gateways have the segment's sub-interface
// enslaved in its bridge (what bridging looks like in the kernel).
func attachedOn(ns map[string]*netnstest.NS, vni uint32) []string {
	var on []string
	for _, g := range []string{"gw1", "gw2"} {
		if enslaved(ns[g], vlan.VLANName(vni)) == nil {
			on = append(on, g)
		}
	}
	return on
}

func enslaved(n *netnstest.NS, name string) error {
	l, err := n.Handle.LinkByName(name)
	if err != nil {
		return err
	}
	if l.Attrs().MasterIndex == 0 {
		return fmt.Errorf("%s/%s is in no bridge", n.Name, name)
	}
	return nil
}

func noLink(n *netnstest.NS, name string) error {
	if _, err := n.Handle.LinkByName(name); err == nil {
		return fmt.Errorf("%s has %s", n.Name, name)
	}
	return nil
}

// waitHolders waits until each segment is attached on exactly one gateway
// and returns it per VNI.
func waitHolders(ns map[string]*netnstest.NS, d time.Duration) (map[uint32]string, error) {
	deadline := time.Now().Add(d)
	for {
		a, b := attachedOn(ns, vniA), attachedOn(ns, vniB)
		if len(a) == 1 && len(b) == 1 {
			return map[uint32]string{vniA: a[0], vniB: b[0]}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("after %s segment a attached on %v, b on %v, want one gateway each", d, a, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// noSecondBridge: while the restarted gateway starts as standby, numbered
// broadcasts both ways over segment a are never seen twice. (Its killed
// predecessor's sub-interface may still be in the bridge: the kernel fence
// keeps it from bridging; printed, not checked.)
func noSecondBridge(ns map[string]*netnstest.NS, restarted string) error {
	f, err := streamBoth(ns, "nb-restart", func() (time.Duration, error) {
		time.Sleep(4 * time.Second)
		return 0, nil
	})
	fmt.Printf("INFO restarted %s: segment a attached in the kernel on %v; legacy→vm %s; vm→legacy %s\n",
		restarted, attachedOn(ns, vniA), f.legacyToVM, f.vmToLegacy)
	return errors.Join(err, atMostOnce(f))
}

// haFigures are one failover's two paths.
type haFigures struct {
	legacyToVM, vmToLegacy streamResult
	took                   time.Duration
}

// failover streams numbered broadcasts both ways over segment a while
// fault hits the victim, for 4 s after it, and prints the figures; the
// takeover shows as the stream's last second arriving whole.
func failover(ns map[string]*netnstest.NS, victim, scenario string, fault func() error) (haFigures, error) {
	survivor := other(victim)
	already := enslaved(ns[survivor], vlan.VLANName(vniA)) == nil
	f, err := streamBoth(ns, "nb-"+scenario, func() (time.Duration, error) {
		faultAt := time.Now()
		ferr := fault()
		var took time.Duration
		for time.Since(faultAt) < 4*time.Second {
			if took == 0 && !already && enslaved(ns[survivor], vlan.VLANName(vniA)) == nil {
				took = time.Since(faultAt)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return took, ferr
	})
	fmt.Printf("FIGURE scenario=%s path=legacy_to_vm %s\n", scenario, f.legacyToVM)
	fmt.Printf("FIGURE scenario=%s path=vm_to_legacy %s\n", scenario, f.vmToLegacy)
	fmt.Printf("FIGURE scenario=%s attach_ms=%d (0: the survivor's port was still in its bridge)\n", scenario, f.took.Milliseconds())
	if err == nil && (f.legacyToVM.LostLastSecond > 0 || f.vmToLegacy.LostLastSecond > 0) {
		err = fmt.Errorf("%s did not take over: lost in the last second legacy→vm %d, vm→legacy %d", survivor,
			f.legacyToVM.LostLastSecond, f.vmToLegacy.LostLastSecond)
	}
	return f, err
}

// streamBoth runs numbered broadcast streams hA → vmA and vmA → hA over
// segment a, 1 s before during (and returns what during returns).
func streamBoth(ns map[string]*netnstest.NS, name string, during func() (time.Duration, error)) (haFigures, error) {
	var f haFigures
	atVM, err := openCapture(ns["vmA"], "eth0")
	if err != nil {
		return f, err
	}
	defer atVM.close()
	atHost, err := openCapture(ns["hA"], "eth0")
	if err != nil {
		return f, err
	}
	defer atHost.close()
	down, err := startStream(ns["hA"], "eth0", hA, atVM, name+"-up", streamEvery)
	if err != nil {
		return f, err
	}
	upward, err := startStream(ns["vmA"], "eth0", vmA, atHost, name+"-vm", streamEvery)
	if err != nil {
		_, _ = down.end()
		return f, err
	}
	time.Sleep(time.Second)
	took, derr := during()
	f.took = took
	var e1, e2 error
	f.legacyToVM, e1 = down.end()
	f.vmToLegacy, e2 = upward.end()
	return f, errors.Join(derr, e1, e2)
}

func atMostOnce(f haFigures) error {
	if f.legacyToVM.SeenTwice > 0 || f.vmToLegacy.SeenTwice > 0 {
		return fmt.Errorf("frames seen twice: legacy→vm %d, vm→legacy %d", f.legacyToVM.SeenTwice, f.vmToLegacy.SeenTwice)
	}
	if f.legacyToVM.Sent == 0 || f.vmToLegacy.Sent == 0 {
		return fmt.Errorf("nothing sent")
	}
	return nil
}

func within(f haFigures, goal time.Duration) error {
	if f.legacyToVM.Outage > goal || f.vmToLegacy.Outage > goal {
		return fmt.Errorf("outage legacy→vm %s, vm→legacy %s, goal %s", f.legacyToVM.Outage, f.vmToLegacy.Outage, goal)
	}
	return nil
}

func linksDown(n *netnstest.NS, names ...string) error {
	var errs []error
	for _, name := range names {
		l, err := n.Handle.LinkByName(name)
		if err == nil {
			err = n.Handle.LinkSetDown(l)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// expectBetween: the marker frame arrives at c min to max times (max: as
// many as were sent, so none crossed twice).
func expectBetween(marker string, emit func() error, c *capture, minN, maxN int, window time.Duration) error {
	if err := emit(); err != nil {
		return err
	}
	if got := c.count(marker, time.Now().Add(window)); got < minN || got > maxN {
		return fmt.Errorf("%s saw %d %q frames, want %d to %d", c.where, got, marker, minN, maxN)
	}
	return nil
}

func logLacksIn(path string, parts ...string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if strings.Contains(string(raw), p) {
			return fmt.Errorf("%s has %s", path, p)
		}
	}
	return nil
}

// standbyProbesNothing: for three probe rounds, no ARP frame from the
// standby's trunk MAC (its sub-interfaces would share it) reaches the
// VLAN 200 host: the standby's probe never leaves.
func standbyProbesNothing(ns map[string]*netnstest.NS, g *haGateway) error {
	trunk, err := ns[g.name].Handle.LinkByName("eth1")
	if err != nil {
		return err
	}
	at, err := openCapture(ns["hB"], "eth0")
	if err != nil {
		return err
	}
	defer at.close()
	mac := trunk.Attrs().HardwareAddr
	buf := make([]byte, 65536)
	n := 0
	for until := time.Now().Add(3 * time.Second); time.Now().Before(until); {
		l, _, err := unix.Recvfrom(at.fd, buf, 0)
		if err == nil && l >= 14 && bytes.Equal(buf[6:12], mac) && binary.BigEndian.Uint16(buf[12:14]) == unix.ETH_P_ARP {
			n++
		}
	}
	if n != 0 {
		return fmt.Errorf("hB saw %d ARP frames from the standby's trunk MAC %s", n, mac)
	}
	return nil
}
