package labnet

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Faults as they happen (TESTBED.md): a node losing power has every link
// down at the same moment; a partition drops packets between two parties
// only, so requests hang instead of being refused.

// LinksDown sets every link of role's namespace but lo down in one `ip
// -batch` run (one process, back-to-back netlink requests).
func (l *Lab) LinksDown(role string) error {
	out, err := exec.Command("ip", "-n", l.NS(role), "-o", "link", "show").Output()
	if err != nil {
		return fmt.Errorf("list links of %s: %w", role, err)
	}
	var batch strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.TrimSuffix(f[1], ":")
		if i := strings.IndexByte(name, '@'); i >= 0 {
			name = name[:i]
		}
		if name != "lo" {
			fmt.Fprintf(&batch, "link set dev %s down\n", name)
		}
	}
	cmd := exec.Command("ip", "-n", l.NS(role), "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("links of %s down: %w: %s", role, err, out)
	}
	return nil
}

// DropTo drops, in role's namespace, every packet sent to dst:port (TCP):
// its connections there hang. The returned func removes the rule.
func (l *Lab) DropTo(role string, dst netip.AddrPort) (undo func() error, err error) {
	ns, err := netns.GetFromName(l.NS(role))
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", l.NS(role), err)
	}
	// The namespace fd stays open until undo: the connection dials in
	// it at every Flush.
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables in %s: %w", role, err)
	}
	table := &nftables.Table{Name: "lab_drop", Family: nftables.TableFamilyIPv4}
	conn.AddTable(table)
	policy := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{Name: "output", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	a4 := dst.Addr().As4()
	port := []byte{byte(dst.Port() >> 8), byte(dst.Port())}
	conn.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a4[:]},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := conn.Flush(); err != nil {
		ns.Close()
		return nil, fmt.Errorf("nftables drop rule in %s: %w", role, err)
	}
	return func() error {
		defer ns.Close()
		conn.DelTable(table)
		if err := conn.Flush(); err != nil {
			return fmt.Errorf("remove drop rule in %s: %w", role, err)
		}
		return nil
	}, nil
}
