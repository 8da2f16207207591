package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// peerKeyPoll re-reads the key file even without a file event: a missed
// event must not leave a gateway behind in a rotation for long.
const peerKeyPoll = 30 * time.Second

// readPeerKey reads the shared key: 16, 24 or 32 raw bytes.
func readPeerKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--peer-key-file: %w", err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	default:
		return nil, fmt.Errorf("--peer-key-file %s: %d bytes, want 16, 24 or 32 raw bytes", path, len(key))
	}
}

// keyRotator is the peer channel's key rotation (peerlink.Link).
type keyRotator interface {
	RotateKey(key []byte) error
}

// watchPeerKey rotates the peer channel to the key file's new content
// whenever it changes, until ctx ends. It watches the file's directory:
// kubelet updates a mounted Secret by swapping the ..data symlink, which
// replaces the file under its name instead of writing it. A file that
// cannot be read or holds no valid key is refused and the keys in use
// stay (docs/operations.md, "Rotating the peer key").
func watchPeerKey(ctx context.Context, path string, current []byte, link keyRotator, poll time.Duration, log *zap.Logger) {
	var events <-chan fsnotify.Event
	w, err := fsnotify.NewWatcher()
	if err == nil {
		defer w.Close()
		err = w.Add(filepath.Dir(path))
		events = w.Events
	}
	if err != nil {
		log.Warn("peer key file not watched: polling only", zap.String("event", "peerKeyWatchFailed"), zap.String("file", path),
			zap.Duration("poll", poll), zap.Error(err))
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var refused string
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
		case <-tick.C:
		}
		key, err := readPeerKey(path)
		if err != nil {
			if err.Error() != refused {
				log.Error("peer key file refused, keeping the keys in use", zap.String("event", "peerKeyRefused"), zap.Error(err))
				refused = err.Error()
			}
			continue
		}
		refused = ""
		if bytes.Equal(key, current) {
			continue
		}
		if err := link.RotateKey(key); err != nil {
			log.Error("peer key refused, keeping the keys in use", zap.String("event", "peerKeyRefused"), zap.Error(err))
			continue
		}
		current = key
		log.Info("peer key file changed: rotating", zap.String("event", "peerKeyChanged"), zap.String("file", path))
	}
}
