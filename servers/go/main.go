// chat-go: the chat server the way Go is written (docs/servers.md, "go"): a goroutine
// per connection reads and handles its lines; a writer goroutine per receiver runs only
// while output is pending; the runtime's netpoller does the waiting. Standard library
// only. Same protocol, options, limits, /stats and exit statuses as the C++ variants
// (docs/protocol.md, docs/reliability.md, docs/exit-status.md).
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

type server struct {
	opts       options
	hub        *hub
	goroutines sync.WaitGroup // every reader, writer and refused client's goroutine

	mu       sync.Mutex // guards what follows
	sessions map[*session]struct{}
	peak     int // most connections at once since memory was last given back
	stopping bool
}

func main() {
	opts := parseOptions(os.Args[1:])
	s := &server{opts: opts, hub: newHub(), sessions: map[*session]struct{}{}}
	listener, err := listen(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: cannot listen on %s:%d: %s\n", program, opts.bindText, opts.port, err)
		os.Exit(1)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go s.accept(listener)
	go s.returnMemory()
	port := listener.Addr().(*net.TCPAddr).Port
	fmt.Printf("listening on %s:%d variant=%s\n", opts.bind, port, variant)

	<-signals
	listener.Close()
	s.shutdown()
	fmt.Fprintln(os.Stderr, s.hub.stats())
}

// listen binds and listens (SO_REUSEADDR and a backlog of SOMAXCONN: Go's defaults).
// An IPv4 address gets an IPv4 socket, as in the C++ variants (Go's "tcp" would take
// 0.0.0.0 as IPv6's [::]). The error is the C library's wording of the errno, e.g.
// "Address already in use", as the C++ variants print it.
func listen(opts options) (*net.TCPListener, error) {
	network := "tcp6"
	if opts.bind.To4() != nil {
		network = "tcp4"
	}
	listener, err := net.ListenTCP(network, &net.TCPAddr{IP: opts.bind, Port: opts.port})
	var errno syscall.Errno
	if errors.As(err, &errno) {
		text := errno.Error()
		return nil, errors.New(string(text[0]-'a'+'A') + text[1:])
	}
	return listener, err
}

// accept admits clients until the listener is closed. Out of descriptors (or memory for
// a socket) it backs off, 10 ms doubling to 1 s, and keeps serving the others.
func (s *server) accept(listener *net.TCPListener) {
	const first, longest = 10 * time.Millisecond, time.Second
	backoff := first
	for {
		conn, err := listener.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
			errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) {
			time.Sleep(backoff)
			if backoff *= 2; backoff > longest {
				backoff = longest
			}
			continue
		}
		if err != nil {
			continue // the peer gave up (ECONNABORTED): its connection only
		}
		backoff = first
		s.admit(conn)
	}
}

func (s *server) admit(conn *net.TCPConn) {
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return
	}
	c := &session{srv: s, conn: conn, raw: raw}
	counts := &s.hub.counts
	full := s.opts.maxClients != 0 &&
		counts.clients.Load()+counts.lingering.Load() >= int64(s.opts.maxClients)
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		conn.Close()
		return
	}
	s.sessions[c] = struct{}{}
	if len(s.sessions) > s.peak {
		s.peak = len(s.sessions)
	}
	s.goroutines.Add(1)
	s.mu.Unlock()
	if full {
		go s.refuse(c)
		return
	}
	s.hub.enter(c) // here, not on its goroutine: the next admit() counts it
	go func() {
		defer s.goroutines.Done()
		c.serve()
	}()
}

// refuse: over --max-clients, the client hears /error server-full and lingers at most
// min(--linger-ms, 100 ms) (chat::Linger::refused_linger), so that a flood of refusals
// cannot pin descriptors.
func (s *server) refuse(c *session) {
	defer s.goroutines.Done()
	s.hub.counts.rejected.Add(1)
	linger := s.opts.linger
	if linger > 100*time.Millisecond {
		linger = 100 * time.Millisecond
	}
	c.reply(replyServerFull)
	c.lingeringClose(false, linger)
	c.stop()
	s.forget(c)
}

// returnMemory: Go gives freed memory back to the system only after a garbage
// collection, and then page by page in the background: minutes after a crowd of clients
// has left (tests/faults, Storm.ChurnLeavesNoLeak). Once a second, if at least half of
// the connections, and 1 000 or more, have gone since memory was last given back, it
// collects and gives it back now (one collection: milliseconds, and only after such a
// drop).
func (s *server) returnMemory() {
	for range time.Tick(time.Second) {
		s.mu.Lock()
		now, peak := len(s.sessions), s.peak
		if peak-now >= 1000 && now <= peak/2 {
			s.peak = now
		}
		s.mu.Unlock()
		if peak-now >= 1000 && now <= peak/2 {
			debug.FreeOSMemory()
		}
	}
}

func (s *server) forget(c *session) {
	s.mu.Lock()
	delete(s.sessions, c)
	s.mu.Unlock()
}

// shutdown closes every connection, lingering ones too, and waits (a second at most) for
// their goroutines to leave the rooms, so that the final counters are settled.
func (s *server) shutdown() {
	s.mu.Lock()
	s.stopping = true
	all := make([]*session, 0, len(s.sessions))
	for c := range s.sessions {
		all = append(all, c)
	}
	s.mu.Unlock()
	for _, c := range all {
		c.stop()
	}
	done := make(chan struct{})
	go func() {
		s.goroutines.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
}
