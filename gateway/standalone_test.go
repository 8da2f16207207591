package gateway_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	nbv1 "github.com/netbridge-io/netbridge/api/v1alpha1"
	"github.com/netbridge-io/netbridge/internal/frrtest"
	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// docBlock returns the fenced block that follows `<!-- test: name -->` in
// docs/standalone.md: the tests run what the documentation shows.
func docBlock(t *testing.T, name string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "docs", "standalone.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- test: " + regexp.QuoteMeta(name) + " -->\n```[a-z]*\n(.*?)\n```")
	m := re.FindSubmatch(raw)
	if m == nil {
		t.Fatalf("docs/standalone.md has no block marked <!-- test: %s -->", name)
	}
	return string(m[1]) + "\n"
}

// standaloneHost is the documented topology in namespaces of the test's
// own: the edge host (eth0 to the ToR, eth1 the trunk, eth2 the access
// port), the ToR and a legacy host on the access VLAN.
type standaloneHost struct {
	gw, dc, trunk, legacy *netnstest.NS
	dir, config, log      string
	cmd                   *exec.Cmd
}

func newStandaloneHost(t *testing.T) *standaloneHost {
	t.Helper()
	h := &standaloneHost{gw: netnstest.New(t, "sagw"), dc: netnstest.New(t, "satr"), trunk: netnstest.New(t, "satk"),
		legacy: netnstest.New(t, "salh"), dir: t.TempDir()}
	netnstest.Veth(t, h.gw, "eth0", h.dc, "eth0")
	netnstest.Veth(t, h.gw, "eth1", h.trunk, "eth0")
	netnstest.Veth(t, h.gw, "eth2", h.legacy, "eth0")
	h.gw.Run(t, "ip", "addr", "add", "192.0.2.10/24", "dev", "eth0")
	h.gw.Run(t, "ip", "addr", "add", "2001:db8:0:1::10/64", "dev", "eth0", "nodad")
	h.dc.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "eth0")
	h.dc.Run(t, "ip", "addr", "add", "2001:db8:0:1::1/64", "dev", "eth0", "nodad")
	h.legacy.Run(t, "ip", "addr", "add", "10.20.100.20/24", "dev", "eth0")
	// The documented paths, moved into the test's folder.
	if err := os.WriteFile(filepath.Join(h.dir, "tor.password"), []byte(docBlock(t, "tor.password")), 0o600); err != nil {
		t.Fatal(err)
	}
	h.config = filepath.Join(h.dir, "bridge.yaml")
	h.writeConfig(t, docBlock(t, "bridge.yaml"))
	h.log = filepath.Join(h.dir, "agent.log")
	return h
}

func (h *standaloneHost) writeConfig(t *testing.T, doc string) {
	t.Helper()
	doc = strings.ReplaceAll(doc, "/etc/netbridge/", h.dir+"/")
	if err := os.WriteFile(h.config, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs the documented invocation (plus shorter test timers).
func (h *standaloneHost) start(t *testing.T) {
	t.Helper()
	bin, err := gatewayBin()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(h.log)
	if err != nil {
		t.Fatal(err)
	}
	h.cmd = exec.Command("ip", "netns", "exec", h.gw.Name, bin, "--config="+h.config, "--vtep=192.0.2.10",
		"--node-name=edge1", "--probe-wait=200ms", "--resync=1s", "--graceful-shutdown-wait=0s")
	h.cmd.Stdout, h.cmd.Stderr = f, f
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.cmd.Process.Kill()
		_ = h.cmd.Wait()
		f.Close()
		if t.Failed() {
			raw, _ := os.ReadFile(h.log)
			if len(raw) > 8000 {
				raw = raw[len(raw)-8000:]
			}
			t.Logf("agent log (tail):\n%s", raw)
		}
	})
}

// get fetches a path from the agent's loopback listeners, inside its
// namespace (the defaults: nothing is reachable from outside).
func (h *standaloneHost) get(addr, path string) ([]byte, error) {
	var body []byte
	err := h.gw.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(c, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s: %s: %s", path, resp.Status, body)
		}
		return err
	})
	return body, err
}

type statusDoc struct {
	Node   string                   `json:"node"`
	Status nbv1.BridgeGatewayStatus `json:"status"`
}

func (h *standaloneHost) status(t *testing.T) statusDoc {
	t.Helper()
	raw, err := h.get("127.0.0.1:9651", "/status")
	if err != nil {
		t.Fatalf("/status: %v", err)
	}
	var d statusDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("/status: %v: %s", err, raw)
	}
	return d
}

// events returns the agent's log lines with that event.
func (h *standaloneHost) events(t *testing.T, event string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(h.log)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(string(raw), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

func segmentStatus(d statusDoc, name string) (nbv1.GatewaySegmentStatus, bool) {
	for _, s := range d.Status.Segments {
		if s.Name == name {
			return s, true
		}
	}
	return nbv1.GatewaySegmentStatus{}, false
}

func has8021q() bool {
	_, err := os.Stat("/proc/net/vlan")
	return err == nil || exec.Command("modprobe", "-q", "8021q").Run() == nil
}

// checkDocSegments: the access segment is programmed; the tagged one is
// programmed where the kernel has 802.1Q, and refused naming the missing
// support where it does not (this host kernel) — never "attached".
func checkDocSegments(t *testing.T, h *standaloneHost) {
	t.Helper()
	eventually(t, 30*time.Second, "segments reported", func() error {
		d := h.status(t)
		app, ok := segmentStatus(d, "app")
		if !ok || !app.Programmed {
			return fmt.Errorf("app: %+v", d.Status.Segments)
		}
		db, ok := segmentStatus(d, "db")
		switch {
		case !ok:
			return fmt.Errorf("db missing: %+v", d.Status.Segments)
		case has8021q() && !db.Programmed:
			return fmt.Errorf("db not programmed on a kernel with 802.1Q: %s", db.Error)
		case !has8021q() && (db.Programmed || !strings.Contains(strings.ToLower(db.Error), "8021q")):
			return fmt.Errorf("db on a kernel without 802.1Q: programmed=%v error=%q (want it refused naming 8021q)", db.Programmed, db.Error)
		}
		return nil
	})
}

// TestStandaloneDocExample applies docs/standalone.md's example file,
// unchanged but for its folder, with the documented invocation, against
// the documented FRR and BIRD configurations: both sessions come up with
// MD5, the VM's /32 and /128 reach the router's kernel table; then the
// first-hour mistakes are made on purpose and each one is named.
func TestStandaloneDocExample(t *testing.T) {
	t.Run("frr", func(t *testing.T) {
		h := newStandaloneHost(t)
		r := frrtest.Start(t, h.dc.Name, frrtest.Config{Text: docBlock(t, "frr.conf")})
		h.start(t)
		took := eventually(t, 60*time.Second, "both sessions Established (MD5)", func() error {
			ns, err := r.Neighbors()
			if err != nil {
				return err
			}
			for _, a := range []string{"192.0.2.10", "2001:db8:0:1::10"} {
				if ns[a].State != "Established" {
					return fmt.Errorf("%s: %q", a, ns[a].State)
				}
			}
			return nil
		})
		t.Logf("sessions_established_ms=%d", took.Milliseconds())
		for _, p := range []string{"10.20.100.50/32", "2001:db8:100::50/128"} {
			pfx := netip.MustParsePrefix(p)
			took := eventually(t, 30*time.Second, p+" in FRR's kernel table", func() error {
				ok, err := r.HasKernelRoute(pfx)
				if err != nil || !ok {
					return fmt.Errorf("not installed (%v)", err)
				}
				return nil
			})
			t.Logf("route=%s installed_ms=%d", p, took.Milliseconds())
		}
		checkDocSegments(t, h)
		if len(h.events(t, "segmentAttached")) != 1 {
			t.Errorf("segmentAttached logged %d times, want once (app only): %v", len(h.events(t, "segmentAttached")), h.events(t, "segmentAttached"))
		}
		mistakes(t, h, r)
	})
	t.Run("bird", func(t *testing.T) {
		h := newStandaloneHost(t)
		startBIRD(t, h, docBlock(t, "bird.conf"))
		h.start(t)
		for _, p := range []string{"10.20.100.50/32", "2001:db8:100::50/128"} {
			took := eventually(t, 60*time.Second, p+" in BIRD's kernel table", func() error {
				fam := "-4"
				if strings.Contains(p, ":") {
					fam = "-6"
				}
				out, err := h.dc.Exec(t.Context(), "ip", fam, "route", "show", "exact", p)
				if err != nil || !strings.Contains(out, "via") {
					return fmt.Errorf("not installed: %q %v (birdc: %s %s)", out, err, birdc(h, "show route all table master6"), birdc(h, "show protocols all gw6"))
				}
				return nil
			})
			t.Logf("route=%s installed_ms=%d", p, took.Milliseconds())
		}
		for _, proto := range []string{"gw4", "gw6"} {
			if out := birdc(h, "show protocols "+proto); !strings.Contains(out, "Established") {
				t.Errorf("BIRD %s not Established: %s", proto, out)
			}
		}
	})
}

// mistakes: a missing uplink, a refused IP, an IPv6 VM with only IPv4
// peers, and a typo, each reported by name in the log and the status.
func mistakes(t *testing.T, h *standaloneHost, r *frrtest.Router) {
	doc := docBlock(t, "bridge.yaml")
	// A segment on an interface this host does not have, and a VM on the
	// broadcast address.
	broken := strings.Replace(doc, "  bgp:\n", `  - name: lab
    access: true
    uplink: {interface: eth7}
    vlanID: 300
    vni: 10300
    subnets: ["10.20.30.0/24"]
    mtu: 1450
  bgp:
`, 1) + `- name: vm9
  segment: app
  ips: ["10.20.100.255"]
  mac: "52:54:00:00:09:99"
  vtep: 192.0.2.21
`
	h.writeConfig(t, broken)
	h.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 15*time.Second, "missing uplink and refused IP in /status", func() error {
		d := h.status(t)
		lab, ok := segmentStatus(d, "lab")
		if !ok || lab.Programmed || !strings.Contains(lab.Error, "uplink eth7: no such interface") {
			return fmt.Errorf("lab: %+v", lab)
		}
		for _, f := range d.Status.Refused {
			if f.Endpoint == "vm9" && f.IP == "10.20.100.255" && f.Reason == string(nbv1.ReasonBroadcastAddress) && strings.Contains(f.Message, "broadcast address") {
				return nil
			}
		}
		return fmt.Errorf("vm9 not in refused: %+v", d.Status.Refused)
	})
	metrics, err := h.get("127.0.0.1:9650", "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`netbridge_gateway_segment_error{segment="dc1.lab"} 1`, `netbridge_gateway_degraded 1`, `netbridge_gateway_endpoints{state="refused"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	time.Sleep(2500 * time.Millisecond) // a few resyncs (--resync=1s): still logged once
	refusedSeg := h.events(t, "segmentRefused")
	var labRefusals int
	for _, e := range refusedSeg {
		if e["segment"] == "dc1.lab" && strings.Contains(fmt.Sprint(e["error"]), "eth7") {
			labRefusals++
		}
	}
	if labRefusals != 1 {
		t.Errorf("segmentRefused for dc1.lab (eth7) logged %d times, want once: %v", labRefusals, refusedSeg)
	}
	for _, e := range h.events(t, "segmentAttached") {
		if e["segment"] == "dc1.lab" {
			t.Errorf("the segment without an uplink was logged attached: %v", e)
		}
	}
	if n := len(h.events(t, "endpointRefused")); n != 1 {
		t.Errorf("endpointRefused logged %d times, want once", n)
	} else if e := h.events(t, "endpointRefused")[0]; e["endpoint"] != "default/vm9" || e["ip"] != "10.20.100.255" || e["rule"] != "BroadcastAddress" {
		t.Errorf("endpointRefused: %v", e)
	}

	// Only IPv4 peers: the /128 is withdrawn and the status says why.
	v4only := regexp.MustCompile(`(?s)    - address: 2001:db8:0:1::1\n.*?keepalive: 3\n`).ReplaceAllString(doc, "")
	if strings.Contains(v4only, "2001:db8:0:1::1\n") {
		t.Fatal("could not remove the IPv6 peer from the example")
	}
	h.writeConfig(t, v4only)
	h.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 15*time.Second, "vm1's /128 not advertised, and why", func() error {
		for _, e := range h.status(t).Status.Endpoints {
			if e.Name == "vm1" && strings.Contains(e.Message, "2001:db8:100::50 is not advertised: every BGP peer is IPv4") {
				return nil
			}
		}
		return fmt.Errorf("no reason in /status: %+v", h.status(t).Status.Endpoints)
	})
	time.Sleep(2500 * time.Millisecond) // a few resyncs: still logged once
	var v6Notices []map[string]any
	for _, e := range h.events(t, "endpointNotAdvertised") {
		if e["endpoint"] == "default/vm1" && strings.Contains(fmt.Sprint(e["message"]), "every BGP peer is IPv4") {
			v6Notices = append(v6Notices, e)
		}
	}
	if len(v6Notices) != 1 {
		t.Errorf("vm1's IPv6 reason logged %d times, want once: %v", len(v6Notices), v6Notices)
	}
	if !has8021q() {
		// The tagged segment's VM says why it is not advertised too.
		found := false
		for _, e := range h.status(t).Status.Endpoints {
			found = found || (e.Name == "db1" && strings.Contains(e.Message, "not bridged: ") && strings.Contains(e.Message, "8021q"))
		}
		if !found {
			t.Errorf("db1 does not say it is not bridged: %+v", h.status(t).Status.Endpoints)
		}
	}

	// A typo: refused with the line, the field and the nearest name; the
	// last valid configuration keeps running.
	h.writeConfig(t, strings.Replace(v4only, "    subnets: [\"10.20.200.0/24\"]", "    subnet: [\"10.20.200.0/24\"]", 1))
	h.cmd.Process.Signal(syscall.SIGHUP)
	eventually(t, 10*time.Second, "typo refused by line and field", func() error {
		for _, e := range h.events(t, "configRefused") {
			if msg := fmt.Sprint(e["error"]); regexp.MustCompile(`line \d+: spec\.segments\[1\]\.subnet: unknown field "subnet" \(did you mean "subnets"\?\)`).MatchString(msg) {
				if strings.Contains(msg, "JSON") {
					return fmt.Errorf("speaks JSON: %s", msg)
				}
				return nil
			}
		}
		return fmt.Errorf("no configRefused naming the line and field: %v", h.events(t, "configRefused"))
	})
	time.Sleep(1500 * time.Millisecond)
	if ok, err := r.HasKernelRoute(netip.MustParsePrefix("10.20.100.50/32")); err != nil || !ok {
		t.Fatalf("a refused reload withdrew vm1's /32 (%v)", err)
	}
}

func startBIRD(t *testing.T, h *standaloneHost, conf string) {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird missing: apt-get install -y bird2 (make deps): %v", err)
	}
	path := filepath.Join(h.dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(h.dir, "bird.ctl")
	logf, err := os.Create(filepath.Join(h.dir, "bird.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", h.dc.Name, "bird", "-f", "-c", path, "-s", sock)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			raw, _ := os.ReadFile(logf.Name())
			t.Logf("bird log:\n%s\nbirdc show protocols all:\n%s", raw, birdc(h, "show protocols all"))
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
}

func birdc(h *standaloneHost, cmd string) string {
	out, _ := exec.Command("birdc", append([]string{"-s", filepath.Join(h.dir, "bird.ctl")}, strings.Fields(cmd)...)...).CombinedOutput()
	return string(out)
}
