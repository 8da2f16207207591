package daemon

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/netbridge-io/netbridge/gateway"
	"github.com/netbridge-io/netbridge/gateway/kube"
	"github.com/netbridge-io/netbridge/gateway/peerlink"
)

// haOptions are the agent's HA timings from the peer flags.
func haOptions(p PeerOptions) gateway.HAOptions {
	dead := p.DeadAfter
	if dead == 0 {
		dead = peerlink.DefaultDeadAfterBeats * p.Heartbeat
	}
	return gateway.HAOptions{Heartbeat: p.Heartbeat, DeadAfter: dead, Margin: p.Heartbeat,
		LeaseAloneGrace: 6 * p.Heartbeat, PeerPort: uint16(p.Port)}
}

// startPeerLink opens the peer channel on this gateway's VTEP (the flag,
// else what the API says: node annotation or InternalIP).
func startPeerLink(ctx context.Context, o Options, src *kube.Source, log *zap.Logger) (*peerlink.Link, error) {
	key, err := readPeerKey(o.Peer.KeyFile)
	if err != nil {
		return nil, err
	}
	vtep, err := localVTEP(ctx, o, src)
	if err != nil {
		return nil, fmt.Errorf("peer channel: %w", err)
	}
	if !vtep.IsValid() {
		return nil, fmt.Errorf("peer channel: no VTEP for node %s: set --vtep or the node annotation", o.NodeName)
	}
	link, err := peerlink.Start(ctx, peerlink.Config{Name: o.NodeName, BindAddr: vtep, Port: o.Peer.Port, Key: key,
		HeartbeatInterval: o.Peer.Heartbeat, DeadAfter: o.Peer.DeadAfter, Log: log.Named("peerlink")})
	if err != nil {
		return nil, fmt.Errorf("peer channel: %w", err)
	}
	go watchPeerKey(ctx, o.Peer.KeyFile, key, link, peerKeyPoll, log.Named("peerkey"))
	return link, nil
}

// spreadAlive is rule 9's health of the other candidates: alive on the
// peer channel, or not heard yet while this gateway is starting (at a
// cold start of every gateway, peers that are up but not heard yet must
// not look dead, or every gateway would prefer itself). Without the
// channel every candidate counts (nil).
func spreadAlive(peers gateway.PeerChannel, grace time.Duration) func(string) bool {
	if peers == nil {
		return nil
	}
	start := time.Now()
	return func(name string) bool {
		v := peers.Peers()[name]
		return v.Alive || (v.LastHeard.IsZero() && time.Since(start) < grace)
	}
}
