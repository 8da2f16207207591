package v1alpha1

import (
	"crypto/sha256"
	"encoding/binary"
)

// PreferredGateway is the gateway that should hold segment k's Lease among
// the healthy candidates (rule 9 of docs/ha.md): the rendezvous (HRW) hash,
// the candidate with the highest hash of (LeaseName(k), name), ties to the
// smaller name. Every gateway computes the same answer from the same set,
// segments spread evenly, and a candidate's removal moves only the segments
// it was preferred for. "" when there is no candidate.
func PreferredGateway(k SegmentKey, candidates []string) string {
	lease := LeaseName(k)
	best, bestScore := "", uint64(0)
	for _, c := range candidates {
		s := hrwScore(lease, c)
		if best == "" || s > bestScore || (s == bestScore && c < best) {
			best, bestScore = c, s
		}
	}
	return best
}

// AnnotationRebalance on a segment Lease asks for a planned rebalance: a
// holder that is not the segment's preferred gateway hands the Lease over
// once per new value (any token, e.g. a date). Set it on every Lease with
// kubectl annotate (docs/operations.md).
const AnnotationRebalance = "netbridge.io/rebalance"

func hrwScore(lease, gateway string) uint64 {
	h := sha256.New()
	h.Write([]byte(lease))
	h.Write([]byte{0})
	h.Write([]byte(gateway))
	return binary.BigEndian.Uint64(h.Sum(nil)[:8])
}
