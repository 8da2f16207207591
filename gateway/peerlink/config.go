package peerlink

import (
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// Defaults for the zero fields of Config.
const (
	DefaultPort              = 7946
	DefaultHeartbeatInterval = 100 * time.Millisecond
	// DefaultDeadAfterBeats is DeadAfter in heartbeats: two lost datagrams in
	// a row are tolerated, the third means dead.
	DefaultDeadAfterBeats = 3
	DefaultMaxClockSkew   = 30 * time.Second
)

// Config is one gateway's end of the peer channel.
type Config struct {
	// Name identifies this gateway to its peers (the node name); peers
	// configure it under this name.
	Name string
	// BindAddr is the underlay (VTEP) address the channel listens and sends
	// on. It must be a specific address: peers check the source address.
	BindAddr netip.Addr
	// Port is the UDP (and memberlist's TCP) port; 0 means DefaultPort.
	Port int
	// Key is the shared secret (AES-128/192/256: 16, 24 or 32 bytes).
	Key []byte
	// HeartbeatInterval is the period of the messages to every peer.
	HeartbeatInterval time.Duration
	// DeadAfter is how long a silent peer stays alive; it must be longer
	// than HeartbeatInterval. 0 means DefaultDeadAfterBeats heartbeats.
	DeadAfter time.Duration
	// MaxClockSkew bounds |peer's send time - our wall clock| of an
	// accepted message, which bounds how old a replayed message can be.
	MaxClockSkew time.Duration
	// Log receives the channel's events; nil means no logging.
	Log *zap.Logger
}

// withDefaults returns cfg with its zero fields defaulted, or an error that
// names the first invalid field and its value.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		return cfg, fmt.Errorf("peerlink config: Name is empty")
	}
	if len(cfg.Name) > 128 {
		return cfg, fmt.Errorf("peerlink config: Name %q is longer than 128 bytes", cfg.Name)
	}
	if !cfg.BindAddr.IsValid() || cfg.BindAddr.IsUnspecified() {
		return cfg, fmt.Errorf("peerlink config: BindAddr %q must be a specific IP address", cfg.BindAddr)
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return cfg, fmt.Errorf("peerlink config: Port %d is outside 1-65535", cfg.Port)
	}
	switch len(cfg.Key) {
	case 16, 24, 32:
	default:
		return cfg, fmt.Errorf("peerlink config: Key is %d bytes, want 16, 24 or 32 (AES-128/192/256)", len(cfg.Key))
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.HeartbeatInterval < time.Millisecond || cfg.HeartbeatInterval > 10*time.Second {
		return cfg, fmt.Errorf("peerlink config: HeartbeatInterval %s is outside 1ms-10s", cfg.HeartbeatInterval)
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = DefaultDeadAfterBeats * cfg.HeartbeatInterval
	}
	if cfg.DeadAfter <= cfg.HeartbeatInterval {
		return cfg, fmt.Errorf("peerlink config: DeadAfter %s must be longer than HeartbeatInterval %s", cfg.DeadAfter, cfg.HeartbeatInterval)
	}
	if cfg.MaxClockSkew == 0 {
		cfg.MaxClockSkew = DefaultMaxClockSkew
	}
	if cfg.MaxClockSkew < cfg.DeadAfter {
		return cfg, fmt.Errorf("peerlink config: MaxClockSkew %s must be at least DeadAfter %s", cfg.MaxClockSkew, cfg.DeadAfter)
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	return cfg, nil
}

// validPeers checks a peer set given to SetPeers: names and addresses
// are unique, and none is this gateway's own.
func validPeers(self string, selfAddr netip.AddrPort, peers map[string]netip.AddrPort) error {
	owner := map[netip.AddrPort]string{}
	for name, ap := range peers {
		if ap == selfAddr {
			return fmt.Errorf("peerlink peers: %q has this gateway's own address %s", name, ap)
		}
		if other, dup := owner[ap]; dup {
			return fmt.Errorf("peerlink peers: %q and %q share address %s", other, name, ap)
		}
		owner[ap] = name
		if name == "" {
			return fmt.Errorf("peerlink peers: empty name for %s", ap)
		}
		if name == self {
			return fmt.Errorf("peerlink peers: %q is this gateway's own name", name)
		}
		if !ap.IsValid() || ap.Addr().IsUnspecified() || ap.Port() == 0 {
			return fmt.Errorf("peerlink peers: %q has invalid address %q", name, ap)
		}
	}
	return nil
}
