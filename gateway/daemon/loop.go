package daemon

import (
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/vlan"
)

// loopKeyLabel separates the loop probe's HMAC key from the peer
// channel's AES key: one secret, two primitives, two derived keys.
const loopKeyLabel = "netbridge loop probe v2"

// loopProbeKey derives the loop probe key from the peer channel key.
func loopProbeKey(peerKey []byte) []byte {
	m := hmac.New(sha256.New, peerKey)
	m.Write([]byte(loopKeyLabel))
	return m.Sum(nil)
}

// keyFollower is the peer channel's view of its keys (peerlink.Link).
type keyFollower interface {
	OnKeys(fn func(use []byte, accept [][]byte))
}

// loopProbeKeys derives the probe's send key and accepted keys from the
// peer channel's.
func loopProbeKeys(use []byte, accept [][]byte) ([]byte, [][]byte) {
	out := make([][]byte, 0, len(accept))
	for _, k := range accept {
		out = append(out, loopProbeKey(k))
	}
	return loopProbeKey(use), out
}

// startLoopProbe runs the loop probe on a gateway with a peer key (the
// gateways that may bridge one VLAN share it); without one it is off.
func startLoopProbe(o Options, deps *gateway.Deps, dp *vlan.DataPlane, log *zap.Logger) (stop func(), err error) {
	if o.Peer.KeyFile == "" {
		log.Warn("no --peer-key-file: the loop probe is off (a second bridge on a VLAN is not detected)",
			zap.String("event", "loopProbeOff"))
		return func() {}, nil
	}
	key, err := os.ReadFile(o.Peer.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--peer-key-file: %w", err)
	}
	inbox := gateway.NewLoopInbox()
	probe, err := vlan.NewLoopProbe(vlan.LoopProbeOptions{Self: o.NodeName, Key: loopProbeKey(key),
		OnDetect: inbox.Deliver, Log: log.Named("vlan")})
	if err != nil {
		return nil, err
	}
	// The probe key follows a rotation of the peer key step by step (sent
	// with the key the peer channel encrypts with, accepted under every key
	// it accepts), so a loop during a rotation is still seen at both ends.
	if kr, ok := deps.Peers.(keyFollower); ok {
		kr.OnKeys(func(use []byte, accept [][]byte) {
			if err := probe.SetKeys(loopProbeKeys(use, accept)); err != nil {
				log.Error("loop probe key not rotated", zap.String("event", "loopProbeKeyRefused"), zap.Error(err))
			}
		})
	}
	deps.LoopProbe, deps.LoopInbox, deps.Release = probe, inbox, dp
	return func() { _ = probe.Close() }, nil
}
