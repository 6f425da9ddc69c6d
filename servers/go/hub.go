package main

// What the server does with a line, whatever goroutine runs it: rooms, commands and
// counters (servers/common's Hub, LineDecoder and command parsing, in Go).

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
)

// The counters behind /stats (docs/protocol.md, "Counters"). Atomic: readers and writers
// on any goroutine bump them without the hub's lock.
type counters struct {
	clients, linesIn, linesOut, bytesIn, bytesOut atomic.Int64
	slowDisconnects, rejected, lingering          atomic.Int64
}

type room struct {
	name    string
	members map[*session]struct{}
}

// The rooms, under one lock. A room exists while it has members.
type hub struct {
	mu     sync.Mutex
	rooms  map[string]*room
	counts counters
}

func newHub() *hub { return &hub{rooms: map[string]*room{}} }

// A message is content + LF in one allocation, shared by every receiver's queue.
func newMessage(content []byte) []byte {
	m := make([]byte, len(content)+1)
	copy(m, content)
	m[len(content)] = '\n'
	return m
}

// Replies whose text never changes are built once.
var (
	replyBadRoom        = []byte("/error bad-room\n")
	replyUnknownCommand = []byte("/error unknown-command\n")
	replyLineTooLong    = []byte("/error line-too-long\n")
	replyServerFull     = []byte("/error server-full\n")
)

func (h *hub) enter(c *session) {
	h.mu.Lock()
	h.join(c, "lobby")
	h.mu.Unlock()
	h.counts.clients.Add(1)
}

// exit: the connection receives nothing more. Idempotent.
func (h *hub) exit(c *session) {
	h.mu.Lock()
	left := c.room != nil
	h.leave(c)
	h.mu.Unlock()
	if left {
		h.counts.clients.Add(-1)
	}
}

// join and leave run under h.mu.
func (h *hub) join(c *session, name string) {
	if c.room != nil && c.room.name == name {
		return
	}
	h.leave(c)
	r := h.rooms[name]
	if r == nil {
		r = &room{name: name, members: map[*session]struct{}{}}
		h.rooms[name] = r
	}
	r.members[c] = struct{}{}
	c.room = r
}

func (h *hub) leave(c *session) {
	r := c.room
	if r == nil {
		return
	}
	c.room = nil
	delete(r.members, c)
	if len(r.members) == 0 {
		delete(h.rooms, r.name)
	}
}

// handle takes one line (content, no LF) from c: a chat line goes to every other member
// of c's room, in the order c's reader handles them. It returns the reply for c, if any,
// and whether c quit.
func (h *hub) handle(c *session, line []byte) (reply []byte, quit bool) {
	if len(line) == 0 || line[0] != '/' || bytes.HasPrefix(line, []byte("//")) {
		h.counts.linesIn.Add(1)
		message := newMessage(line)
		var slow []*session
		h.mu.Lock()
		if c.room != nil {
			for member := range c.room.members {
				if member != c && !member.deliver(message, true) {
					slow = append(slow, member)
				}
			}
		}
		h.mu.Unlock()
		for _, s := range slow { // closed outside the lock: Close waits for their goroutines
			s.stop()
		}
		return nil, false
	}
	word, argument, _ := bytes.Cut(line, []byte(" "))
	switch string(word) {
	case "/join":
		if !validRoomName(argument) {
			return replyBadRoom, false
		}
		h.mu.Lock()
		h.join(c, string(argument))
		h.mu.Unlock()
		return newMessage(append([]byte("/joined "), argument...)), false
	case "/stats":
		return newMessage([]byte(h.stats())), false
	case "/quit":
		return nil, true
	}
	return replyUnknownCommand, false
}

// 1-64 bytes of [A-Za-z0-9._-].
func validRoomName(name []byte) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for _, b := range name {
		ok := b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-'
		if !ok {
			return false
		}
	}
	return true
}

// The /stats line, without the LF; also printed to stderr at shutdown.
func (h *hub) stats() string {
	h.mu.Lock()
	rooms := len(h.rooms)
	h.mu.Unlock()
	c := &h.counts
	return fmt.Sprintf("/stats variant=%s clients=%d rooms=%d lines_in=%d lines_out=%d bytes_in=%d "+
		"bytes_out=%d slow_disconnects=%d rejected=%d lingering=%d", variant, c.clients.Load(), rooms,
		c.linesIn.Load(), c.linesOut.Load(), c.bytesIn.Load(), c.bytesOut.Load(),
		c.slowDisconnects.Load(), c.rejected.Load(), c.lingering.Load())
}

// lineDecoder turns a byte stream into lines (docs/protocol.md, "Lines"), holding at most
// maxLine + 1 bytes of an unfinished line; a line that lies whole in one chunk is handed
// out as a slice of that chunk.
type lineDecoder struct {
	maxLine int
	partial []byte
	failed  bool
}

type decodeStatus int

const (
	decodeOK      decodeStatus = iota
	decodeStopped              // onLine returned false; the rest of the chunk was dropped
	decodeTooLong              // content over maxLine: close the connection
)

func (d *lineDecoder) feed(chunk []byte, onLine func([]byte) bool) decodeStatus {
	if d.failed {
		return decodeTooLong
	}
	for len(chunk) > 0 {
		lf := bytes.IndexByte(chunk, '\n')
		if lf < 0 {
			size := len(d.partial) + len(chunk)
			if size > d.maxLine && !(size == d.maxLine+1 && chunk[len(chunk)-1] == '\r') {
				return d.fail()
			}
			d.partial = append(d.partial, chunk...)
			return decodeOK
		}
		line := chunk[:lf]
		chunk = chunk[lf+1:]
		hasCR := len(line) > 0 && line[len(line)-1] == '\r' ||
			len(line) == 0 && len(d.partial) > 0 && d.partial[len(d.partial)-1] == '\r'
		size := len(d.partial) + len(line)
		if hasCR {
			size--
		}
		if size > d.maxLine {
			return d.fail()
		}
		if len(d.partial) > 0 {
			d.partial = append(d.partial, line...)
			line = d.partial
		}
		if hasCR {
			line = line[:len(line)-1]
		}
		more := onLine(line)
		d.release()
		if !more {
			return decodeStopped
		}
	}
	return decodeOK
}

func (d *lineDecoder) fail() decodeStatus {
	d.failed = true
	d.partial = nil
	return decodeTooLong
}

// A few hundred bytes are kept for the next split line; a long line's buffer is not.
func (d *lineDecoder) release() {
	if cap(d.partial) > 256 {
		d.partial = nil
	} else {
		d.partial = d.partial[:0]
	}
}
