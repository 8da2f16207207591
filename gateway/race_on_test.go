//go:build race

package gateway_test

// raceBuild: the tests run under the race detector, so the agent binary
// the integration tests start is race-built too.
const raceBuild = true
