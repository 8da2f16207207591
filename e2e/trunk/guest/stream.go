package main

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netbridge-io/netbridge/internal/netnstest"
)

// stream sends numbered broadcasts from one interface at a fixed interval
// and records, at a capture, how often each number arrived: the outage of
// the path (the longest run of missing numbers), what was lost and what
// was seen twice (two bridges at once) are read off the numbers.
type stream struct {
	prefix   string
	interval time.Duration
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	sent     int
	seen     map[int]int
	sendErr  error
}

// startStream sends prefix-N frames from (ns, iface) with src's MAC every
// interval and counts them at at.
func startStream(ns *netnstest.NS, iface string, src host, at *capture, prefix string, interval time.Duration) (*stream, error) {
	fd, ifindex, err := rawSocket(ns, iface)
	if err != nil {
		return nil, err
	}
	s := &stream{prefix: prefix + "-", interval: interval, stop: make(chan struct{}), seen: map[int]int{}}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		defer unix.Close(fd)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for n := 0; ; n++ {
			frame := broadcastFrame(src.hw(), fmt.Sprintf("%s%06d.", s.prefix, n))
			if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex, Halen: 6}); err != nil && s.sendErr == nil {
				s.mu.Lock()
				s.sendErr = err
				s.mu.Unlock()
			}
			s.mu.Lock()
			s.sent = n + 1
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	go func() {
		defer s.wg.Done()
		buf := make([]byte, 65536)
		marker := []byte(s.prefix)
		for {
			select {
			case <-s.stop:
				// Drain what is queued, then end.
				if l, _, err := unix.Recvfrom(at.fd, buf, unix.MSG_DONTWAIT); err == nil {
					s.record(buf[:l], marker)
					continue
				}
				return
			default:
			}
			l, from, err := unix.Recvfrom(at.fd, buf, 0)
			if err != nil {
				continue // the capture's 50 ms receive timeout
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			s.record(buf[:l], marker)
		}
	}()
	return s, nil
}

func (s *stream) record(frame, marker []byte) {
	i := bytes.Index(frame, marker)
	if i < 0 || i+len(marker)+6 > len(frame) {
		return
	}
	n, err := strconv.Atoi(string(frame[i+len(marker) : i+len(marker)+6]))
	if err != nil {
		return
	}
	s.mu.Lock()
	s.seen[n]++
	s.mu.Unlock()
}

// streamResult is one stream's figures. The last frames sent are not
// counted as lost (they may still be on the way when the sender stops).
type streamResult struct {
	Sent, Lost, SeenTwice int
	// LostLastSecond counts the losses of the last second counted.
	LostLastSecond int
	Outage         time.Duration
}

func (r streamResult) String() string {
	return fmt.Sprintf("outage_ms=%d lost=%d seen_twice=%d sent=%d", r.Outage.Milliseconds(), r.Lost, r.SeenTwice, r.Sent)
}

// end stops the stream after a last grace for frames in flight.
func (s *stream) end() (streamResult, error) {
	time.Sleep(300 * time.Millisecond)
	close(s.stop)
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := streamResult{Sent: s.sent}
	tail := int(300*time.Millisecond/s.interval) + 1
	run := 0
	last := s.sent - tail - int(time.Second/s.interval)
	for n := 0; n < s.sent-tail; n++ {
		switch c := s.seen[n]; {
		case c == 0:
			r.Lost++
			if n >= last {
				r.LostLastSecond++
			}
			run++
			// n−run and n+1 arrived: the path was out for run+1 intervals.
			if d := time.Duration(run+1) * s.interval; d > r.Outage {
				r.Outage = d
			}
		default:
			run = 0
			if c > 1 {
				r.SeenTwice++
			}
		}
	}
	return r, s.sendErr
}
