package peerlink

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"

	"github.com/hashicorp/memberlist"
	"go.uber.org/zap"
)

// RotateKey moves the channel to key without a restart (a restart would
// cost the peers' acks, and with it the peer grant) and without ever
// partitioning the gateways, whatever order and delay the gateways get
// the new key in (kubelet updates each node's mounted Secret on its own
// schedule). Three steps, each taken only when every configured peer has
// shown, in its heartbeats, that it is ready for it:
//
//  1. at once: accept key as well as the keys in use (encrypt with the old);
//  2. when every peer accepts key: encrypt with key, still accept the old;
//  3. when every peer encrypts with key: drop the old keys.
//
// A peer that is down or never heard holds the rotation at its step (the
// old key stays accepted) until it is heard with the new key. Calling it
// again with the same key changes nothing; an invalid key is refused and
// the keys stay as they were.
func (l *Link) RotateKey(key []byte) error {
	if err := memberlist.ValidateKey(key); err != nil {
		return fmt.Errorf("peerlink key: %d bytes, want 16, 24 or 32: %w", len(key), err)
	}
	key = bytes.Clone(key)
	l.keysMu.Lock()
	if err := l.keyring.AddKey(key); err != nil {
		l.keysMu.Unlock()
		return fmt.Errorf("peerlink key: add: %w", err)
	}
	view := keyViewOf(l.keyring)
	l.keysMu.Unlock()
	l.mu.Lock()
	same := bytes.Equal(l.target, key)
	l.target, l.keyView = key, view
	l.mu.Unlock()
	l.keysChanged()
	if !same {
		l.log.Info("peer channel key rotation: new key accepted", zap.String("event", "peerlinkKeyAccepted"), zap.String("keyID", keyID(key)))
	}
	wake(l.kick) // tell the peers at once
	wake(l.poke) // advance at once if there is no peer to wait for
	return nil
}

// OnKeys calls fn now and after every change of the channel's keys with
// the key messages are encrypted with and every key accepted (use among
// them), so that what is derived from the peer key (the loop probe's key)
// follows a rotation step by step. fn must not block.
func (l *Link) OnKeys(fn func(use []byte, accept [][]byte)) {
	l.keysMu.Lock()
	defer l.keysMu.Unlock()
	l.keyHooks = append(l.keyHooks, fn)
	fn(bytes.Clone(l.keyring.GetPrimaryKey()), cloneKeys(l.keyring.GetKeys()))
}

// keysChanged tells the OnKeys hooks the keyring as it is now (under
// keysMu, so that two changes reach a hook in their order).
func (l *Link) keysChanged() {
	l.keysMu.Lock()
	defer l.keysMu.Unlock()
	for _, fn := range l.keyHooks {
		fn(bytes.Clone(l.keyring.GetPrimaryKey()), cloneKeys(l.keyring.GetKeys()))
	}
}

func cloneKeys(keys [][]byte) [][]byte {
	out := make([][]byte, 0, len(keys))
	for _, k := range keys {
		out = append(out, bytes.Clone(k))
	}
	return out
}

// advanceRotation takes the next step of a rotation under way when every
// configured peer is ready for it (RotateKey).
func (l *Link) advanceRotation() {
	l.mu.Lock()
	target := l.target
	if target == nil {
		l.mu.Unlock()
		return
	}
	id := keyID(target)
	allAccept, allUse := true, true
	var waiting []string
	for name, p := range l.tr.peers {
		accepts := p.keys != nil && slices.Contains(p.keys.Accept, id)
		uses := p.keys != nil && p.keys.Use == id
		allAccept, allUse = allAccept && accepts, allUse && uses
		if !uses {
			waiting = append(waiting, name)
		}
	}
	l.mu.Unlock()

	l.keysMu.Lock()
	ev := ""
	var err error
	switch {
	case !bytes.Equal(l.keyring.GetPrimaryKey(), target):
		if allAccept {
			ev = "peerlinkKeyInUse"
			err = l.keyring.UseKey(target)
		}
	case allUse:
		ev = "peerlinkKeyRotated"
		for _, k := range l.keyring.GetKeys() {
			if !bytes.Equal(k, target) && err == nil {
				err = l.keyring.RemoveKey(k)
			}
		}
	}
	view := keyViewOf(l.keyring)
	l.keysMu.Unlock()
	if err != nil {
		l.log.Error("peer channel key rotation step failed", zap.String("event", "peerlinkKeyRotationFailed"), zap.Error(err))
		return
	}
	if ev == "" {
		return
	}
	l.mu.Lock()
	l.keyView = view
	if ev == "peerlinkKeyRotated" && bytes.Equal(l.target, target) {
		l.target = nil
	}
	l.mu.Unlock()
	l.keysChanged()
	sort.Strings(waiting)
	l.log.Info("peer channel key rotation step", zap.String("event", ev), zap.String("keyID", id), zap.Strings("peersNotUsingIt", waiting))
	wake(l.kick)
}

// keyID names a key on the wire without revealing it (a hash prefix; the
// key itself has at least 128 random bits).
func keyID(k []byte) string {
	h := sha256.Sum256(append([]byte("netbridge-peerlink key id\x00"), k...))
	return hex.EncodeToString(h[:8])
}

func keyViewOf(kr *memberlist.Keyring) keyState {
	v := keyState{Use: keyID(kr.GetPrimaryKey())}
	for _, k := range kr.GetKeys() {
		v.Accept = append(v.Accept, keyID(k))
	}
	sort.Strings(v.Accept)
	return v
}
