// Command benchsummary copies a `go test -bench` log from stdin to stdout
// and ends it with the summary table of every benchreport figure in it.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/netbridge-io/netbridge/internal/benchreport"
)

func main() {
	var log strings.Builder
	if _, err := io.Copy(io.MultiWriter(os.Stdout, &log), os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(1)
	}
	figs, err := benchreport.Parse(strings.NewReader(log.String()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(1)
	}
	fmt.Println()
	fmt.Println("== make bench: summary (ratio = ours / limit measured in the same run) ==")
	if err := benchreport.Table(os.Stdout, figs); err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(1)
	}
}
