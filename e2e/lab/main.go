// Command lab brings up the netbridge lab (namespaces, FRR, a real
// kube-apiserver + etcd, controller, gateways, node agents, two VMs), prints
// what to try, and tears everything down on SIGINT/SIGTERM. `make lab` runs
// it; `make lab-down` (this program with -down) removes the leftovers of a
// lab that was killed hard.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/netbridge-io/netbridge/e2e"
	"github.com/netbridge-io/netbridge/internal/labnet"
)

// Prefix is the fixed prefix of `make lab`'s namespaces.
const Prefix = "nblab"

func main() {
	bin := flag.String("bin", "bin", "folder with netbridge-gateway, netbridge-controller, netbridgectl")
	state := flag.String("state", "/tmp/netbridge-lab", "folder for logs, pid files and the kubeconfigs")
	down := flag.Bool("down", false, "remove the leftovers of a lab killed hard, then exit")
	flag.Parse()
	if *down {
		cleanup(*state)
		return
	}
	binDir, err := filepath.Abs(*bin)
	if err != nil {
		fail(err)
	}
	for _, b := range []string{"netbridge-gateway", "netbridge-controller", "netbridgectl"} {
		if _, err := os.Stat(filepath.Join(binDir, b)); err != nil {
			fail(fmt.Errorf("%s missing in %s (run `make build`): %w", b, binDir, err))
		}
	}
	// A previous lab killed hard would collide with this one.
	cleanup(*state)
	if err := os.MkdirAll(*state, 0o755); err != nil {
		fail(err)
	}
	logf := func(format string, args ...any) {
		fmt.Printf("[%s] %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	env, err := e2e.Up(ctx, e2e.Options{Prefix: Prefix, BinDir: binDir, StateDir: *state, Logf: logf, AttachVMsThroughNAD: true})
	cancel()
	if err != nil {
		fail(err)
	}
	// Kept for `make lab-down` after a hard kill: the API server's and
	// etcd's pids (children of this process).
	_ = os.WriteFile(filepath.Join(*state, "apiserver.pids"), []byte(strings.Join(childPids(os.Getpid(), "kube-apiserver", "etcd"), "\n")), 0o644)
	l := env.Lab
	fmt.Printf(`
netbridge lab %q is up (logs in %s). vm1 (%s on node1) and vm2 (%s on node2)
are Staged: nothing is advertised yet. Try, from another shell:

  export KUBECONFIG=%s
  %s/netbridgectl status
  %s/netbridgectl cutover plan vm1
  %s/netbridgectl cutover activate vm1
  vtysh -N %s -c 'show ip route %s/32'          # next hop = the active gateway
  ip netns exec %s ping -c 3 %s                     # legacy host1 -> vm1 at L2
  ip netns exec %s ping -c 3 %s                     # DC client -> vm1 via the /32
  %s/netbridgectl verify vm1
  %s/netbridgectl cutover rollback vm1
  ip netns exec %s bridge fdb show dev %s          # the active gateway's VXLAN FDB
  tail -f %s/gw1.log

Namespaces: %s-{dc,client,lrouter,host1,gw1,gw2,node1,node2,vm1,vm2,fabric,legacy}.
Ctrl-C (or SIGTERM) tears the lab down.
`, Prefix, *state, labnet.VMs[0].IP, labnet.VMs[1].IP,
		env.LabKubeconfig, binDir, binDir, binDir,
		l.FRRName, labnet.VMs[0].IP,
		l.NS("host1"), labnet.VMs[0].IP, l.NS("client"), labnet.VMs[0].IP,
		binDir, binDir, l.NS("gw1"), e2e.VXLAN, *state, Prefix)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
	logf("tearing the lab down")
	env.Down()
	logf("done")
}

// childPids lists the pids of parent's children whose command is one of names.
func childPids(parent int, names ...string) []string {
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		raw, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(raw)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		comm := s[open+1 : closing]
		f := strings.Fields(s[closing+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(parent) {
			continue
		}
		for _, n := range names {
			if comm == n {
				pids = append(pids, strings.Fields(s)[0])
			}
		}
	}
	return pids
}

// cleanup removes what a lab with Prefix left behind: processes recorded in
// the state folder, FRR, namespaces, the host link, and the API server and
// etcd whose pids the lab recorded.
func cleanup(state string) {
	lab := labnet.New(Prefix, state)
	lab.Down() // processes with pid files, FRR, namespaces, host link
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], Prefix+"-") {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
	if raw, err := os.ReadFile(filepath.Join(state, "apiserver.pids")); err == nil {
		for _, s := range strings.Fields(string(raw)) {
			if pid, err := strconv.Atoi(s); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	_ = os.RemoveAll(state)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "lab:", err)
	os.Exit(1)
}
