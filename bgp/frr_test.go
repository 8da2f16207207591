package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/netbridge-io/netbridge/internal/frrtest"
)

func ptr[T any](v T) *T { return &v }

func TestEBGPAdvertiseAndWithdraw(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	l := newLab(t, frrOpts{})
	s := newSpeaker(t)
	peer := l.peer(frrOpts{})
	v4 := Route{
		Prefix:           l.host(10),
		Communities:      []Community{NewCommunity(65000, 200), NewCommunity(65000, 100)},
		LargeCommunities: []LargeCommunity{{65000, 1, 2}},
		MED:              ptr(uint32(50)),
	}
	v6 := Route{
		Prefix:           l.host6(10),
		NextHop:          l.hostV6,
		Communities:      []Community{NewCommunity(65000, 600)},
		LargeCommunities: []LargeCommunity{{65000, 6, 6}},
		MED:              ptr(uint32(60)),
	}
	prepended := Route{Prefix: l.host(11), ASPathPrepend: 2}
	aggregate := Route{Prefix: l.segV4, Aggregate: true}
	events := make(chan PeerEvent, 16)
	s.Subscribe(func(e PeerEvent) {
		select {
		case events <- e:
		default: // never block GoBGP's watch goroutine
		}
	})
	rep, err := s.Apply(ctx, l.desired([]Peer{peer}, v4, v6, prepended, aggregate))
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if !rep.Restarted || len(rep.PeersAdded) != 1 || len(rep.RoutesAdded) != 4 {
		t.Fatalf("report = %+v", rep)
	}
	waitEstablished(t, s, l.dcV4)
	timeout := time.After(5 * time.Second)
	for established := false; !established; {
		select {
		case e := <-events:
			established = e.Address == l.dcV4 && e.State == StateEstablished
		case <-timeout:
			t.Fatal("no Established event from Subscribe")
		}
	}
	if p := l.frrPath(t, prepended.Prefix); p.ASPath.String != "65000 65000 65000" {
		t.Errorf("prepended route AS path at FRR %q, want 65000 65000 65000", p.ASPath.String)
	}
	l.frrPath(t, aggregate.Prefix)
	l.waitKernel(t, aggregate.Prefix, true)

	for _, c := range []struct {
		r          Route
		comm, lcom string
		med        int64
	}{
		{v4, "65000:100 65000:200", "65000:1:2", 50},
		{v6, "65000:600", "65000:6:6", 60},
	} {
		p := l.frrPath(t, c.r.Prefix)
		if p.Community.String != c.comm || p.LargeCommunity.String != c.lcom || p.Med == nil || *p.Med != c.med {
			t.Errorf("%s at FRR: community %q large %q med %v; want %q %q %d", c.r.Prefix, p.Community.String, p.LargeCommunity.String, p.Med, c.comm, c.lcom, c.med)
		}
		if p.ASPath.String != fmt.Sprint(gwASN) {
			t.Errorf("%s at FRR: AS path %q, want %d", c.r.Prefix, p.ASPath.String, gwASN)
		}
		l.waitKernel(t, c.r.Prefix, true)
	}

	st, err := s.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || st.Peers[0].RoutesSent != 4 || !st.Peers[0].EverEstablished || st.Peers[0].Uptime < 0 {
		t.Errorf("status = %+v", st)
	}

	// Re-applying the same state changes and sends nothing.
	before := st.Peers[0].UpdatesSent
	rep, err = s.Apply(ctx, l.desired([]Peer{peer}, v4, v6, prepended, aggregate))
	if err != nil || rep.Changed() {
		t.Fatalf("re-apply: changed=%v report=%+v err=%v", rep.Changed(), rep, err)
	}
	time.Sleep(500 * time.Millisecond)
	if st, _ := s.Status(ctx); st.Peers[0].UpdatesSent != before {
		t.Errorf("re-apply sent %d UPDATEs, want 0", st.Peers[0].UpdatesSent-before)
	}

	// Withdraw: gone from FRR's table and the kernel.
	rep, err = s.Apply(ctx, l.desired([]Peer{peer}, prepended, aggregate))
	if err != nil || len(rep.RoutesWithdrawn) != 2 {
		t.Fatalf("withdraw: report=%+v err=%v", rep, err)
	}
	for _, p := range []netip.Prefix{v4.Prefix, v6.Prefix} {
		l.waitFRRAbsent(t, p)
		l.waitKernel(t, p, false)
	}
}

func TestIBGPLocalPref(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	o := frrOpts{ibgp: true}
	l := newLab(t, o)
	s := newSpeaker(t)
	r := Route{Prefix: l.host(20), LocalPref: 250, Communities: []Community{NewCommunity(65000, 1)}}
	if _, err := s.Apply(ctx, l.desired([]Peer{l.peer(o)}, r)); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, l.dcV4)
	p := l.frrPath(t, r.Prefix)
	if p.LocalPref == nil || *p.LocalPref != 250 {
		t.Fatalf("local preference at FRR = %v, want 250", p.LocalPref)
	}
	l.waitKernel(t, r.Prefix, true)
}

func TestCommunityChangeTouchesOnlyThatRoute(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	l := newLab(t, frrOpts{})
	s := newSpeaker(t)
	peer := l.peer(frrOpts{})
	routes := []Route{
		{Prefix: l.host(1), Communities: []Community{NewCommunity(65000, 1)}},
		{Prefix: l.host(2), Communities: []Community{NewCommunity(65000, 2)}},
		{Prefix: l.host(3), Communities: []Community{NewCommunity(65000, 3)}},
	}
	if _, err := s.Apply(ctx, l.desired([]Peer{peer}, routes...)); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, l.dcV4)
	// FRR gives a path its table version once best-path selection has
	// run (0 before): read the versions once they have settled.
	before := map[netip.Prefix]int64{}
	frrtest.Eventually(t, 10*time.Second, func() error {
		for _, r := range routes {
			before[r.Prefix] = l.frrPath(t, r.Prefix).Version
		}
		time.Sleep(300 * time.Millisecond)
		for _, r := range routes {
			if v := l.frrPath(t, r.Prefix).Version; v == 0 || v != before[r.Prefix] {
				return fmt.Errorf("%s: path version %d then %d: not settled", r.Prefix, before[r.Prefix], v)
			}
		}
		return nil
	})
	st, _ := s.Status(ctx)
	updates := st.Peers[0].UpdatesSent

	changed := routes[1]
	changed.Communities = []Community{NewCommunity(65000, 22), NewCommunity(65000, 23)}
	rep, err := s.Apply(ctx, l.desired([]Peer{peer}, routes[0], changed, routes[2]))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.RoutesUpdated) != 1 || rep.RoutesUpdated[0] != changed.Prefix || len(rep.RoutesAdded)+len(rep.RoutesWithdrawn)+len(rep.PeersUpdated) != 0 {
		t.Fatalf("report = %+v", rep)
	}
	frrtest.Eventually(t, 10*time.Second, func() error {
		p := l.frrPath(t, changed.Prefix)
		if p.Community.String != "65000:22 65000:23" {
			return fmt.Errorf("community at FRR %q", p.Community.String)
		}
		return nil
	})
	if v := l.frrPath(t, changed.Prefix).Version; v == before[changed.Prefix] {
		t.Errorf("the changed route's version did not move (%d)", v)
	}
	for _, r := range []Route{routes[0], routes[2]} {
		if got := l.frrPath(t, r.Prefix).Version; got != before[r.Prefix] {
			t.Errorf("%s was updated at FRR (path version %d -> %d)", r.Prefix, before[r.Prefix], got)
		}
	}
	st, _ = s.Status(ctx)
	if d := st.Peers[0].UpdatesSent - updates; d != 1 {
		t.Errorf("community change sent %d UPDATEs, want 1", d)
	}
}

func TestMD5(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	t.Run("match", func(t *testing.T) {
		parallel(t)
		o := frrOpts{password: "s3cret-md5"}
		l := newLab(t, o)
		s := newSpeaker(t)
		if _, err := s.Apply(ctx, l.desired([]Peer{l.peer(o)}, Route{Prefix: l.host(5)})); err != nil {
			t.Fatal(err)
		}
		waitEstablished(t, s, l.dcV4)
		l.waitKernel(t, l.host(5), true)
	})
	t.Run("mismatch", func(t *testing.T) {
		parallel(t)
		l := newLab(t, frrOpts{password: "s3cret-md5"})
		s := newSpeaker(t)
		p := l.peer(frrOpts{password: "wrong"})
		if _, err := s.Apply(ctx, l.desired([]Peer{p}, Route{Prefix: l.host(5)})); err != nil {
			t.Fatal(err)
		}
		// Several connect retries (1 s) and FRR's (datacenter: 10 s... but it
		// connects at once): none may come up.
		deadline := time.Now().Add(8 * time.Second)
		for time.Now().Before(deadline) {
			st, err := s.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ps := st.Peers[0]; ps.State == StateEstablished || ps.EverEstablished {
				t.Fatalf("session with a wrong MD5 password came up: %+v", ps)
			}
			time.Sleep(200 * time.Millisecond)
		}
		st, _ := s.Status(ctx)
		ps := st.Peers[0]
		if ps.LastError == "" {
			t.Errorf("status does not say why: %+v", ps)
		}
		t.Logf("status with wrong password: state=%s lastError=%q", ps.State, ps.LastError)
		if n, _ := l.frr.Neighbors(); n[l.hostV4.String()].State == "Established" {
			t.Errorf("FRR says Established")
		}
	})
}

func TestExportGuard(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	l := newLab(t, frrOpts{})
	s := newSpeaker(t)
	outside := netip.MustParsePrefix("192.0.2.7/32")
	inside := Route{Prefix: l.host(7)}
	rep, err := s.Apply(ctx, l.desired([]Peer{l.peer(frrOpts{})}, inside, Route{Prefix: outside}))
	if !errors.Is(err, ErrRouteRefused) || !strings.Contains(err.Error(), outside.String()) {
		t.Fatalf("Apply error = %v, want ErrRouteRefused naming %s", err, outside)
	}
	if len(rep.Refused) != 1 || rep.Refused[0].Prefix != outside || len(rep.RoutesAdded) != 1 {
		t.Fatalf("report = %+v", rep)
	}
	waitEstablished(t, s, l.dcV4)
	l.waitKernel(t, inside.Prefix, true)

	// Defence in depth: a path that bypasses the Go guard (injected
	// straight into GoBGP) is stopped by the export policy.
	leak := netip.MustParsePrefix("198.51.100.9/32")
	p, err := toAPIPath(Route{Prefix: leak}, gwASN)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	_, err = s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}})
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	// A marker route sent after the leak: once FRR has it, the leak would
	// have arrived too.
	marker := Route{Prefix: l.host(8)}
	if _, err := s.Apply(ctx, l.desired([]Peer{l.peer(frrOpts{})}, inside, marker)); err != nil {
		t.Fatal(err)
	}
	l.waitKernel(t, marker.Prefix, true)
	for _, pfx := range []netip.Prefix{outside, leak} {
		if paths, err := l.frr.Route(pfx); err != nil || len(paths) != 0 {
			t.Errorf("FRR has %s (err %v): the export guard leaked", pfx, err)
		}
		if ok, _ := l.frr.HasKernelRoute(pfx); ok {
			t.Errorf("kernel of %s has %s", l.ns, pfx)
		}
	}
}

func TestImportRejected(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	learned := netip.MustParsePrefix("10.99.0.0/24")
	o := frrOpts{extraAF4: "  network " + learned.String() + "\n  network 10.99.1.0/24\n"}
	l := newLab(t, o)
	s := newSpeaker(t)
	if _, err := s.Apply(ctx, l.desired([]Peer{l.peer(o)}, Route{Prefix: l.host(9)})); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, l.dcV4)
	frrtest.Eventually(t, 20*time.Second, func() error {
		st, err := s.Status(ctx)
		if err != nil {
			return err
		}
		ps := st.Peers[0]
		// FRR also echoes our own route back (we drop it as an AS loop).
		if ps.RoutesReceived < 2 || ps.RoutesReceivedRejected != ps.RoutesReceived {
			return fmt.Errorf("received %d rejected %d, want >= 2, all rejected", ps.RoutesReceived, ps.RoutesReceivedRejected)
		}
		return nil
	})
	// Not in our RIB: the only path there is our own.
	s.mu.Lock()
	var foreign []string
	err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgppkt.RF_IPv4_UC}, func(n bgppkt.NLRI, _ []*apiutil.Path) {
		if n.String() != l.host(9).String() {
			foreign = append(foreign, n.String())
		}
	})
	s.mu.Unlock()
	if err != nil || len(foreign) != 0 {
		t.Fatalf("our RIB has learned routes %v (err %v)", foreign, err)
	}
	// And our own route still went out (the import policy lets local routes through).
	l.waitKernel(t, l.host(9), true)
}

func TestMaxPrefix(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	var nets strings.Builder
	for i := range 5 {
		fmt.Fprintf(&nets, "  network 10.98.%d.0/24\n", i)
	}
	o := frrOpts{extraAF4: nets.String()}
	l := newLab(t, o)
	s := newSpeaker(t)
	p := l.peer(o)
	p.MaxPrefixes = 3
	if _, err := s.Apply(ctx, l.desired([]Peer{p})); err != nil {
		t.Fatal(err)
	}
	frrtest.Eventually(t, 30*time.Second, func() error {
		st, err := s.Status(ctx)
		if err != nil {
			return err
		}
		ps := st.Peers[0]
		if !ps.PrefixLimitExceeded || !strings.Contains(ps.LastError, "maximum number of prefixes") {
			return fmt.Errorf("peer %s limit exceeded %v lastError %q", ps.State, ps.PrefixLimitExceeded, ps.LastError)
		}
		if ps.State == StateEstablished {
			return fmt.Errorf("still Established")
		}
		return nil
	})
	st, _ := s.Status(ctx)
	t.Logf("after max-prefix: state=%s lastError=%q", st.Peers[0].State, st.Peers[0].LastError)
	// FRR saw our CEASE.
	out, err := l.frr.Vtysh("show bgp neighbor " + l.hostV4.String())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ToLower(string(out)), "maximum number of prefixes") {
		t.Logf("FRR neighbour output:\n%s", out)
		t.Errorf("FRR does not report the max-prefix notification")
	}
}

func TestPeerAndGlobalChanges(t *testing.T) {
	parallel(t)
	ctx := context.Background()
	l := newLab(t, frrOpts{})
	s := newSpeaker(t)
	peer := l.peer(frrOpts{})
	r := Route{Prefix: l.host(50)}
	if _, err := s.Apply(ctx, l.desired([]Peer{peer}, r)); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, l.dcV4)
	l.waitKernel(t, r.Prefix, true)

	// A peer parameter change resets only that peer, routes untouched.
	peer.Description = "renamed"
	rep, err := s.Apply(ctx, l.desired([]Peer{peer}, r))
	if err != nil || len(rep.PeersUpdated) != 1 || rep.Restarted || len(rep.RoutesAdded)+len(rep.RoutesWithdrawn) != 0 {
		t.Fatalf("peer change: report %+v err %v", rep, err)
	}
	waitEstablished(t, s, l.dcV4)
	if st, _ := s.Status(ctx); st.Peers[0].Description != "renamed" {
		t.Errorf("description = %q", st.Peers[0].Description)
	}

	// Listening on our veth address (a global change) restarts the server;
	// everything comes back.
	d := l.desired([]Peer{peer}, r)
	d.Global.ListenPort = 0
	d.Global.ListenAddresses = []netip.Addr{l.hostV4}
	rep, err = s.Apply(ctx, d)
	if err != nil || !rep.Restarted || len(rep.PeersAdded) != 1 || len(rep.RoutesAdded) != 1 {
		t.Fatalf("global change: report %+v err %v", rep, err)
	}
	waitEstablished(t, s, l.dcV4)
	l.waitKernel(t, r.Prefix, true)

	// Removing the peer closes the session at FRR.
	rep, err = s.Apply(ctx, Desired{Global: d.Global, AllowedPrefixes: d.AllowedPrefixes, Routes: d.Routes})
	if err != nil || len(rep.PeersRemoved) != 1 {
		t.Fatalf("peer removal: report %+v err %v", rep, err)
	}
	frrtest.Eventually(t, 10*time.Second, func() error {
		n, err := l.frr.Neighbors()
		if err != nil {
			return err
		}
		if st := n[l.hostV4.String()].State; st == "Established" {
			return fmt.Errorf("FRR still Established")
		}
		return nil
	})
	l.waitKernel(t, r.Prefix, false)
}
