//go:build race

package bgp

// raceEnabled: see parallel in testenv_test.go.
const raceEnabled = true
