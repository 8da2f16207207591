// Package runbook is the logic behind netbridgectl, the migration engineer's
// cutover tool: it reads the cluster's view of a migration (BridgeConfigs,
// BridgeEndpoints, BridgeGateways, KubeVirt VMIs) into a Snapshot, derives
// status, cutover plans with preflight checks and end-to-end verification
// from it with pure functions, and drives per-VM cutover by writing the VMI
// annotation netbridge.io/cutover and waiting for the gateways to report the
// result.
//
// The CLI writes only that annotation: BridgeEndpoints belong to the
// controller and BridgeGateways to the gateways (one writer per object).
package runbook
