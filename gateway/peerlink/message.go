package peerlink

import (
	"encoding/json"
	"fmt"
)

// wireVersion changes when the message's meaning changes; a receiver drops
// versions it does not know (counted as "version").
const wireVersion = 1

// message is one heartbeat, sent to one peer, inside memberlist's
// encrypted user message (AES-GCM with the shared key and the label as
// additional data). The keys are short because every heartbeat carries them.
type message struct {
	V    int    `json:"v"`
	From string `json:"f"`
	// Addr is the sender's bind address: the receiver checks it against the
	// address it configured for From (memberlist does not tell a delegate
	// where a message came from; the transport filter checks the source IP).
	Addr string `json:"a"`
	// To is the receiver's name, so a message cannot be replayed at another
	// gateway that shares the key.
	To string `json:"t"`
	// Boot is random per process start; Seq increases by one per round
	// within a boot; Sent is the sender's wall clock in Unix nanoseconds.
	Boot string `json:"b"`
	Seq  uint64 `json:"s"`
	Sent int64  `json:"w"`
	// Reply marks the immediate answer to a heartbeat: it is not answered.
	Reply bool `json:"r,omitempty"`
	// DeadAfter is the sender's, in nanoseconds: how long it waits before
	// it calls the receiver dead. Both ends of a grant use the stricter one.
	DeadAfter int64            `json:"d"`
	Claims    map[string]Claim `json:"c,omitempty"`
	// Acks holds, per peer of the sender, the newest message it accepted
	// from that peer.
	Acks map[string]ack `json:"k,omitempty"`
	// Keys says which keys the sender accepts and which it encrypts with
	// (key ids, never keys): peers advance a key rotation on it.
	Keys *keyState `json:"y,omitempty"`
}

// keyState is a gateway's keyring by key id (keyID).
type keyState struct {
	Accept []string `json:"a"`
	Use    string   `json:"u"`
}

// Claim is what a gateway says about one segment.
type Claim struct {
	// Holding is true from the moment the gateway may bridge the segment
	// (set before it attaches) until it has detached (cleared after).
	Holding bool `json:"h,omitempty"`
	// Epoch is the fencing token of the Lease the claim is based on (the
	// Lease's leaseTransitions when the gateway acquired it).
	Epoch uint64 `json:"e,omitempty"`
}

// ack names one message by the sender's boot and sequence number.
type ack struct {
	Boot string `json:"b"`
	Seq  uint64 `json:"s"`
}

func encodeMessage(m message) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode heartbeat: %w", err)
	}
	return b, nil
}

func decodeMessage(b []byte) (message, error) {
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		return message{}, fmt.Errorf("decode heartbeat: %w", err)
	}
	return m, nil
}
