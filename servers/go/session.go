package main

// One connection: a reader goroutine for its whole life, and a writer goroutine only
// while output is pending (docs/servers.md, "go").

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

type entry struct {
	message []byte
	chat    bool // only chat lines count in lines_out
}

type session struct {
	srv  *server
	conn *net.TCPConn
	raw  syscall.RawConn
	room *room // guarded by hub.mu

	mu      sync.Mutex    // guards what follows
	queue   []entry       // not yet handed to the writer
	spare   []entry       // the writer's last batch, emptied, for the next queue
	pending int           // bytes queued or being written: --max-pending
	writing bool          // a writer goroutine runs
	closed  bool          // stopped: deliver nothing more
	closing bool          // in its lingering close: the writer says when it is done
	drained chan struct{} // closed by the writer when it ends, once closing
}

// The read buffers. A reader takes one only once its socket is readable and gives it back
// when it has handled what it read, so an idle connection holds none (like the C++
// variants' one shared buffer).
const readBufferSize = 64 * 1024

var readBuffers = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

// read waits until the socket is readable, then reads into a pooled buffer; the caller
// hands it back with readBuffers.Put. n == 0 with no error (and no buffer): the peer
// ended its stream.
func (c *session) read() (buffer *[]byte, n int, err error) {
	var readErr error
	err = c.raw.Read(func(fd uintptr) bool {
		buffer = readBuffers.Get().(*[]byte)
		for {
			n, readErr = syscall.Read(int(fd), *buffer)
			if readErr != syscall.EINTR {
				break
			}
		}
		if readErr == syscall.EAGAIN {
			readBuffers.Put(buffer)
			buffer = nil
			return false // wait for readability (the deadline, if any, still holds)
		}
		return true
	})
	if err == nil {
		err = readErr
	}
	if err != nil || n == 0 {
		if buffer != nil {
			readBuffers.Put(buffer)
		}
		return nil, 0, err
	}
	c.srv.hub.counts.bytesIn.Add(int64(n))
	return buffer, n, nil
}

// serve is the reader goroutine of an admitted client (already in the lobby): read,
// handle every line read, loop; then close.
func (c *session) serve() {
	s := c.srv
	decoder := lineDecoder{maxLine: s.opts.maxLine}
	quit, eof := false, false
	for !quit && !c.isClosed() {
		buffer, n, err := c.read()
		if err != nil || n == 0 {
			eof = err == nil
			break
		}
		status := decoder.feed((*buffer)[:n], func(line []byte) bool {
			var reply []byte
			reply, quit = s.hub.handle(c, line)
			if reply != nil {
				c.reply(reply)
			}
			return !quit && !c.isClosed()
		})
		readBuffers.Put(buffer)
		if status == decodeTooLong {
			c.reply(replyLineTooLong)
			quit = true
		}
		// Let the writers this read woke run before the next read, as an event loop
		// does. A reader that always finds input would otherwise keep the processor for
		// its whole time slice (10 ms) and queue megabytes for them meanwhile: a receiver
		// that keeps up would be disconnected as slow (tests/faults, Flood.*).
		runtime.Gosched()
	}
	s.hub.exit(c)
	if (quit || eof) && !c.isClosed() {
		c.lingeringClose(eof, s.opts.linger)
	}
	c.stop()
	s.forget(c)
}

func (c *session) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// deliver queues message for c and starts a writer unless one runs. false: that would
// take c over --max-pending; c is marked closed and the caller must stop() it (outside
// the hub's lock) and count it slow.
func (c *session) deliver(message []byte, chat bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return true
	}
	if len(message) > c.srv.opts.maxPending-c.pending {
		c.closed = true
		c.queue, c.spare, c.pending = nil, nil, 0
		c.srv.hub.counts.slowDisconnects.Add(1)
		return false
	}
	if c.queue == nil {
		c.queue, c.spare = c.spare, nil
	}
	c.queue = append(c.queue, entry{message, chat})
	c.pending += len(message)
	if !c.writing {
		c.writing = true
		c.srv.goroutines.Add(1)
		go c.write()
	}
	return true
}

// reply queues a reply for c itself.
func (c *session) reply(message []byte) {
	if !c.deliver(message, false) {
		c.stop()
	}
}

// stop closes the connection at once; what is queued is dropped. The reader and the
// writer, if they wait on the socket, wake with an error and end.
func (c *session) stop() {
	c.mu.Lock()
	c.closed = true
	c.queue, c.spare, c.pending = nil, nil, 0
	c.mu.Unlock()
	c.conn.Close()
}

// write is the writer goroutine: it writes what is queued, batch by batch, each with one
// writev, and ends when the queue is empty.
func (c *session) write() {
	defer c.srv.goroutines.Done()
	var buffers net.Buffers
	for {
		c.mu.Lock()
		if c.closed || len(c.queue) == 0 {
			c.writing = false
			if c.drained != nil {
				// The lingering reader waits for this: wake it (a read deadline in the past).
				close(c.drained)
				c.drained = nil
				c.conn.SetReadDeadline(time.Unix(1, 0))
			}
			c.mu.Unlock()
			return
		}
		batch := c.queue
		c.queue = nil
		c.mu.Unlock()

		buffers = buffers[:0]
		for _, e := range batch {
			buffers = append(buffers, e.message)
		}
		err := c.writeBatch(batch, buffers)
		for i := range batch {
			batch[i] = entry{} // the messages go now, not when the slots are reused
		}
		c.mu.Lock()
		if cap(batch) <= 64 { // keep a small queue's slots; a big one goes
			c.spare = batch[:0]
		}
		timedOut := errors.Is(err, os.ErrDeadlineExceeded)
		if timedOut && c.closing && !c.closed {
			// Give up on the output, but still close lingering.
			c.queue, c.spare, c.pending = nil, nil, 0
		}
		c.mu.Unlock()
		if timedOut {
			c.srv.hub.counts.slowDisconnects.Add(1)
		}
		if err != nil && !(timedOut && c.isClosing()) {
			c.stop()
		}
	}
}

func (c *session) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// writeBatch writes every message of batch (buffers holds the same bytes), counting
// bytes_out and the chat lines written whole (lines_out). --write-timeout-ms is a
// deadline on each writev round: one that took some bytes is tried again with a fresh
// deadline, one that took none within the timeout fails with os.ErrDeadlineExceeded.
func (c *session) writeBatch(batch []entry, buffers net.Buffers) error {
	counts := &c.srv.hub.counts
	first, written := 0, 0 // the first message not yet written whole; bytes of it written
	for len(buffers) > 0 {
		c.conn.SetWriteDeadline(time.Now().Add(c.srv.opts.writeTimeout))
		n64, err := buffers.WriteTo(c.conn) // writev; consumes what it wrote
		n := int(n64)
		if n > 0 {
			counts.bytesOut.Add(n64)
			lines := int64(0)
			for written += n; first < len(batch) && written >= len(batch[first].message); first++ {
				written -= len(batch[first].message)
				if batch[first].chat {
					lines++
				}
			}
			counts.linesOut.Add(lines)
			c.mu.Lock()
			c.pending -= n
			c.mu.Unlock()
		}
		if err != nil && !(n > 0 && errors.Is(err, os.ErrDeadlineExceeded)) {
			return err
		}
	}
	return nil
}

// lingeringClose (docs/reliability.md, "Lingering close", chat::Linger): read and
// discard input while the writer writes what is queued; then FIN, then discard until
// EOF, the linger deadline or --linger-bytes; the caller then closes. eof: the peer has
// ended its stream, so its output is written and the connection closed, with no linger.
func (c *session) lingeringClose(eof bool, linger time.Duration) {
	counts := &c.srv.hub.counts
	counts.lingering.Add(1)
	defer counts.lingering.Add(-1)
	c.mu.Lock()
	c.closing = true
	var drained chan struct{}
	if c.writing {
		drained = make(chan struct{})
		c.drained = drained
	}
	c.mu.Unlock()
	for drained != nil && !eof {
		buffer, n, err := c.read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break // the writer is done: it set a read deadline in the past
		}
		if err != nil {
			return // reset, or stopped
		}
		if n == 0 {
			eof = true
			break
		}
		readBuffers.Put(buffer)
	}
	if drained != nil {
		<-drained // at once, unless the peer sent EOF: then within the write timeout
	}
	if eof || c.isClosed() {
		return
	}
	c.conn.CloseWrite()
	deadline := time.Now().Add(linger)
	c.conn.SetReadDeadline(deadline)
	for discarded := 0; ; {
		buffer, n, err := c.read()
		if err != nil || n == 0 {
			return // EOF, the deadline, a reset or a stop
		}
		readBuffers.Put(buffer)
		discarded += n
		if discarded >= c.srv.opts.lingerBytes || !time.Now().Before(deadline) {
			return
		}
	}
}
