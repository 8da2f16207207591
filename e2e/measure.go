package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/netbridge-io/netbridge/internal/labnet"
)

// Pinger sends ICMP echo every 10 ms from inside a lab namespace (iputils
// ping -i 0.01 -D -O) and measures, once stopped, the longest gap between
// replies and the packets lost.
type Pinger struct {
	From, To string
	cmd      *exec.Cmd
	out      *strings.Builder
	started  time.Time
	done     chan struct{}
}

// StartPinger starts pinging to from the namespace of role from.
func StartPinger(l *labnet.Lab, from, to string) (*Pinger, error) {
	p := &Pinger{From: from, To: to, out: &strings.Builder{}, done: make(chan struct{})}
	p.cmd = exec.Command("ip", "netns", "exec", l.NS(from), "ping", "-n", "-i", "0.01", "-D", "-O", "-W", "1", to)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.started = time.Now()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

// PingResult is what a Pinger measured.
type PingResult struct {
	From, To string
	Sent     int
	Received int
	Lost     int
	// Outage is the longest time without a reply (between consecutive
	// replies, or from the last reply to the stop), minus the interval.
	Outage time.Duration
	// OutageStart is when the longest gap began, from the pinger's start.
	OutageStart time.Duration
	// FirstReply is false when no reply ever came.
	FirstReply bool
	// replies are the reply times, sorted.
	replies []time.Time
}

// ReachedAfter is how long after t the first reply came (false: none did).
func (r PingResult) ReachedAfter(t time.Time) (time.Duration, bool) {
	i := sort.Search(len(r.replies), func(i int) bool { return !r.replies[i].Before(t) })
	if i == len(r.replies) {
		return 0, false
	}
	return r.replies[i].Sub(t), true
}

func (r PingResult) String() string {
	return fmt.Sprintf("%s->%s outage_ms=%d lost=%d sent=%d received=%d (longest gap began %dms after the pinger started)",
		r.From, r.To, r.Outage.Milliseconds(), r.Lost, r.Sent, r.Received, r.OutageStart.Milliseconds())
}

// Stop ends the pinger and computes the result.
func (p *Pinger) Stop() PingResult {
	stopAt := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return parsePing(p.From, p.To, p.out.String(), p.started, stopAt)
}

func parsePing(from, to, out string, started, stopAt time.Time) PingResult {
	r := PingResult{From: from, To: to}
	replies := map[int]float64{}
	maxSeq := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		seq := fieldInt(line, "icmp_seq=")
		if seq > maxSeq {
			maxSeq = seq
		}
		if !strings.Contains(line, " bytes from ") || !strings.HasPrefix(line, "[") || seq < 0 {
			if strings.Contains(line, "packets transmitted") {
				if n, err := strconv.Atoi(strings.Fields(line)[0]); err == nil {
					r.Sent = n
				}
			}
			continue
		}
		ts, err := strconv.ParseFloat(line[1:strings.Index(line, "]")], 64)
		if err != nil {
			continue
		}
		if _, dup := replies[seq]; !dup {
			replies[seq] = ts
		}
	}
	if r.Sent < maxSeq {
		r.Sent = maxSeq
	}
	r.Received = len(replies)
	r.Lost = r.Sent - r.Received
	if r.Lost < 0 {
		r.Lost = 0
	}
	times := make([]float64, 0, len(replies))
	for _, ts := range replies {
		times = append(times, ts)
	}
	sort.Float64s(times)
	for _, ts := range times {
		r.replies = append(r.replies, time.Unix(0, int64(ts*1e9)))
	}
	interval := 10 * time.Millisecond
	if len(times) == 0 {
		r.Outage = stopAt.Sub(started)
		return r
	}
	r.FirstReply = true
	last := float64(stopAt.UnixNano()) / 1e9
	prev := times[0]
	gap, gapStart := 0.0, times[0]
	for _, ts := range append(times[1:], last) {
		if ts-prev > gap {
			gap, gapStart = ts-prev, prev
		}
		prev = ts
	}
	r.OutageStart = time.Duration((gapStart - float64(started.UnixNano())/1e9) * float64(time.Second))
	r.Outage = time.Duration(gap*float64(time.Second)) - interval
	if r.Outage < 0 {
		r.Outage = 0
	}
	return r
}

func fieldInt(line, key string) int {
	i := strings.Index(line, key)
	if i < 0 {
		return -1
	}
	rest := line[i+len(key):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, err := strconv.Atoi(rest[:j])
	if err != nil {
		return -1
	}
	return n
}

// FRRRoute is the best route FRR's RIB has for a prefix: "" when none.
func FRRRoute(l *labnet.Lab, prefix string) (nexthop string, protocol string, err error) {
	out, err := l.Vtysh("show ip route " + prefix + " json")
	if err != nil {
		return "", "", fmt.Errorf("vtysh: %w: %s", err, out)
	}
	var m map[string][]struct {
		Prefix   string `json:"prefix"`
		Protocol string `json:"protocol"`
		Selected bool   `json:"selected"`
		Nexthops []struct {
			IP     string `json:"ip"`
			Active bool   `json:"active"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal(out, &m); err != nil {
		return "", "", fmt.Errorf("vtysh json: %w: %s", err, out)
	}
	for _, rs := range m[prefix] {
		if rs.Prefix != prefix || !rs.Selected {
			continue
		}
		for _, nh := range rs.Nexthops {
			if nh.Active || nh.IP != "" {
				return nh.IP, rs.Protocol, nil
			}
		}
		return "", rs.Protocol, nil
	}
	return "", "", nil
}

// SampleRoute reads FRR's best route for prefix every step and hands it
// (or the vtysh error) to seen, from one goroutine, until the returned
// stop is called; stop waits for the last call and may be called more
// than once.
func SampleRoute(l *labnet.Lab, prefix string, step time.Duration, seen func(nexthop, protocol string, err error)) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-time.After(step):
			}
			seen(FRRRoute(l, prefix))
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		<-finished
	}
}
