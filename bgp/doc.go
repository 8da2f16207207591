// Package bgp is netbridge's BGP speaker: an in-process GoBGP v3 server
// behind a desired-state API. It knows nothing of Kubernetes; the gateway
// hands it plain Go values.
//
//	s := bgp.New(log)
//	s.Subscribe(func(e bgp.PeerEvent) { select { case ch <- e: default: } })
//	rep, err := s.Apply(ctx, bgp.Desired{
//		Global:          bgp.Global{ASN: 65000, RouterID: routerID},
//		AllowedPrefixes: segmentSubnets,
//		Peers:           []bgp.Peer{{Address: tor, ASN: 65001, Password: pw, GracefulRestart: true}},
//		Routes:          []bgp.Route{{Prefix: vmIP32, Communities: comms}},
//	})
//	st, _ := s.Status(ctx)
//	...
//	_ = s.GracefulShutdown(ctx, 30*time.Second) // planned drain (RFC 8326)
//
// Behaviour a network team can rely on:
//
//   - Apply is a reconciler: desired state in, GoBGP's current peers and
//     paths read back, a pure plan (planPeers, planRoutes), the minimal
//     changes applied. Re-applying the same state sends no UPDATE; changing
//     one route's attributes sends one UPDATE for that prefix only.
//   - Export guard: only prefixes inside AllowedPrefixes ever leave the
//     process. Checked in Go before AddPath (refused routes are reported and
//     named in the returned error, the others still go out), and again by a
//     GoBGP global export policy (prefix sets of the allowed prefixes,
//     masks up to /32 and /128, default reject).
//   - Import: everything received is rejected by a global import policy
//     (the gateway learns nothing); Status counts what was rejected.
//   - Graceful restart (RFC 4724) per peer, with the per-family flags GoBGP
//     needs; peers configured right after a (re)start announce the restart
//     (R and F bits) so routers keep our routes until our End-of-RIB. A
//     process that dies (or exits without Stop) is restarted hitlessly.
//     Stop sends CEASE: routers withdraw our routes.
//   - Graceful shutdown (RFC 8326): routes re-advertised with 65535:0, a
//     wait, then withdrawal and CEASE.
//   - ASN, router ID and listener changes restart the GoBGP server (it
//     cannot change them live); peer parameter changes reset that peer.
//
// Known limitation: GoBGP's BgpServer.Serve never returns, so each server
// restart leaves one idle goroutine behind.
package bgp
