package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/netbridge-io/netbridge/gateway/peerlink"
)

// projectSecret writes key into dir the way kubelet updates a mounted
// Secret (its AtomicWriter): a new timestamped directory, a ..data_tmp
// symlink to it renamed over ..data, the old directory removed; the file
// itself is a symlink ..data/key that never changes.
func projectSecret(t *testing.T, dir string, gen int, key []byte) {
	t.Helper()
	ts := fmt.Sprintf("..2026_12_02_00_00_%02d.%d", gen, gen)
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ts, "key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "key")); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", "key"), filepath.Join(dir, "key")); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// freePort is a port free for both UDP and TCP on addr (memberlist
// listens on both).
func freePort(t *testing.T, addr netip.Addr) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", netip.AddrPortFrom(addr, uint16(port)).String())
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// TestPeerKeyRotationFromMountedSecret: two real peer channels on loopback
// exchange heartbeats; the Secret file of each is rewritten as kubelet
// does, the second a second after the first (nodes sync on their own
// schedule). The watchers rotate the key: no peer is ever declared dead,
// no message fails authentication, both end on the new key alone; a bad
// key file is refused and changes nothing; afterwards a sender still on
// the old key is refused.
func TestPeerKeyRotationFromMountedSecret(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	oldKey, newKey := []byte("the old 32-byte peer channel key"), []byte("the new 32-byte peer channel key")
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	addrs := map[string]netip.AddrPort{}
	for name, ip := range map[string]string{"a": "127.0.0.2", "b": "127.0.0.3"} {
		a := netip.MustParseAddr(ip)
		addrs[name] = netip.AddrPortFrom(a, uint16(freePort(t, a)))
	}
	start := func(name string, key []byte) *peerlink.Link {
		l, err := peerlink.Start(ctx, peerlink.Config{Name: name, BindAddr: addrs[name].Addr(), Port: int(addrs[name].Port()), Key: key,
			HeartbeatInterval: 50 * time.Millisecond, DeadAfter: 500 * time.Millisecond, Log: log.With(zap.String("gw", name))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() })
		peers := map[string]netip.AddrPort{}
		for n, ap := range addrs {
			if n != name {
				peers[n] = ap
			}
		}
		if err := l.SetPeers(peers); err != nil {
			t.Fatal(err)
		}
		return l
	}
	links := map[string]*peerlink.Link{}
	dirs := map[string]string{}
	for _, n := range []string{"a", "b"} {
		dirs[n] = t.TempDir()
		projectSecret(t, dirs[n], 1, oldKey)
		key, err := readPeerKey(filepath.Join(dirs[n], "key"))
		if err != nil {
			t.Fatal(err)
		}
		links[n] = start(n, key)
		go watchPeerKey(ctx, filepath.Join(dirs[n], "key"), key, links[n], time.Hour, log.With(zap.String("gw", n)))
	}
	both := func() bool {
		va, vb := links["a"].Peers()["b"], links["b"].Peers()["a"]
		return va.Alive && va.AcksMe && vb.Alive && vb.AcksMe
	}
	waitUntil(t, 5*time.Second, "a and b see each other", both)

	// Sample aliveness throughout: "declared dead" is Alive false.
	var samples, deadSamples atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			samples.Add(1)
			if !links["a"].Peers()["b"].Alive || !links["b"].Peers()["a"].Alive {
				deadSamples.Add(1)
			}
		}
	}()
	began := time.Now()
	// A bad key file first: refused, nothing changes.
	projectSecret(t, dirs["a"], 2, []byte("short"))
	waitUntil(t, 5*time.Second, "bad key file refused", func() bool {
		return logs.FilterField(zap.String("event", "peerKeyRefused")).Len() > 0
	})
	projectSecret(t, dirs["a"], 3, newKey)
	time.Sleep(time.Second) // b's kubelet is slower
	projectSecret(t, dirs["b"], 2, newKey)
	waitUntil(t, 10*time.Second, "both gateways finish the rotation", func() bool {
		return logs.FilterField(zap.String("event", "peerlinkKeyRotated")).Len() == 2
	})
	rotated := time.Since(began)
	time.Sleep(500 * time.Millisecond) // heartbeats on the new key alone
	close(stop)
	<-sampled
	decrypt := links["a"].Stats().Dropped[peerlink.DropDecrypt] + links["b"].Stats().Dropped[peerlink.DropDecrypt]
	peerDead := logs.FilterField(zap.String("event", "peerDead")).Len()
	t.Logf("rotation_ms=%d samples=%d dead_samples=%d peer_dead_events=%d dropped_decrypt=%d",
		rotated.Milliseconds(), samples.Load(), deadSamples.Load(), peerDead, decrypt)
	if deadSamples.Load() != 0 || peerDead != 0 {
		t.Errorf("a peer was declared dead during the rotation (%d samples, %d events)", deadSamples.Load(), peerDead)
	}
	if decrypt != 0 {
		t.Errorf("%d messages failed authentication during the rotation", decrypt)
	}
	for _, ev := range []string{"peerlinkKeyAccepted", "peerlinkKeyInUse", "peerlinkKeyRotated", "peerKeyChanged"} {
		if n := logs.FilterField(zap.String("event", ev)).Len(); n != 2 {
			t.Errorf("event %s logged %d times, want once per gateway", ev, n)
		}
	}

	// b is replaced by a sender on the old key, at b's address: refused.
	_ = links["b"].Close()
	waitUntil(t, 2*time.Second, "b dead at a after Close", func() bool { return !links["a"].Peers()["b"].Alive })
	before := links["a"].Stats().Dropped[peerlink.DropDecrypt]
	start("b", oldKey)
	time.Sleep(time.Second)
	after := links["a"].Stats().Dropped[peerlink.DropDecrypt]
	t.Logf("old_key_dropped_decrypt=%d", after-before)
	if links["a"].Peers()["b"].Alive {
		t.Errorf("a sender on the old key was heard after the rotation")
	}
	if after == before {
		t.Errorf("old-key messages were not refused as decrypt failures")
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
