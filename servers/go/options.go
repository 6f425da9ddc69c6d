package main

// The command line, with the names, ranges, defaults and messages of every chatbench
// server (servers/common/options.cpp, cli/cli.cpp, docs/exit-status.md): --help prints
// the help and exits 0; anything wrong prints one line naming the option and what it
// accepts, and exits 2.

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

const variant = "go"
const program = "chat-" + variant

type options struct {
	bind         net.IP
	bindText     string
	port         int
	maxLine      int
	maxPending   int
	writeTimeout time.Duration
	maxClients   int
	linger       time.Duration
	lingerBytes  int
}

// An integer option: its flag, help, range and where the value goes.
type intOption struct {
	name, help, kind string
	min, max         int64
	value            *int64
}

const (
	mostBytes   = 1 << 30    // per line, per receiver
	mostMs      = 3_600_000  // an hour
	mostClients = 10_000_000 // far above any use
)

func usageError(what string) {
	fmt.Fprintf(os.Stderr, "%s: %s (%s --help)\n", program, what, program)
	os.Exit(2)
}

func parseOptions(args []string) options {
	bind := "127.0.0.1"
	port, maxLine, maxPending := int64(3000), int64(4096), int64(1048576)
	writeTimeout, maxClients, lingerMs, lingerBytes := int64(5000), int64(0), int64(1000), int64(4194304)
	ints := []intOption{
		{"--port", "TCP port; 0 picks a free one", "UINT", 0, 65535, &port},
		{"--max-line", "Content bytes per line; longer closes the client", "UINT", 1, mostBytes, &maxLine},
		{"--max-pending", "Bytes queued for one receiver; more disconnects it as slow", "UINT", 1, mostBytes, &maxPending},
		{"--write-timeout-ms", "A receiver that takes no byte for this long while output is pending is disconnected",
			"INT", 1, mostMs, &writeTimeout},
		{"--max-clients", "Most clients at once; 0 = no limit", "UINT", 0, mostClients, &maxClients},
		{"--linger-ms", "After a closing client's last reply, its input is read and discarded for at most this " +
			"long (docs/reliability.md)", "INT", 0, mostMs, &lingerMs},
		{"--linger-bytes", "Most bytes read and discarded while lingering", "UINT", 0, mostBytes, &lingerBytes},
	}
	for _, a := range args {
		if a == "-h" || a == "--help" {
			printHelp(bind, ints)
			os.Exit(0)
		}
	}
	seen := map[string]bool{}
	var unknown []string
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(args[i], "=")
		if !strings.HasPrefix(name, "--") {
			hasValue = false
		}
		var option *intOption
		for k := range ints {
			if ints[k].name == name {
				option = &ints[k]
			}
		}
		kind := "TEXT:IPv4 or IPv6"
		if option != nil {
			kind = fmt.Sprintf("%s:%d..%d", option.kind, option.min, option.max)
		} else if name != "--bind" {
			unknown = append(unknown, args[i])
			continue
		}
		if !hasValue && i+1 < len(args) && !strings.HasPrefix(args[i+1], "--") {
			value, hasValue = args[i+1], true
			i++
		}
		if !hasValue || value == "" || seen[name] { // CLI11 says the same of a repeated option
			usageError(name + ": needs a value, " + kind)
		}
		seen[name] = true
		if option == nil {
			if net.ParseIP(value) == nil {
				usageError(fmt.Sprintf("--bind: '%s' is not an IPv4 or IPv6 address (e.g. 127.0.0.1 or ::1)", value))
			}
			bind = value
			continue
		}
		// Digits with an optional minus, like std::from_chars: no '+', no spaces.
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || strings.HasPrefix(value, "+") || n < option.min || n > option.max {
			usageError(fmt.Sprintf("%s: '%s' is not an integer from %d to %d", name, value, option.min, option.max))
		}
		*option.value = n
	}
	if len(unknown) > 0 {
		usageError("unknown option or argument: " + strings.Join(unknown, " "))
	}
	return options{
		bind: net.ParseIP(bind), bindText: bind, port: int(port), maxLine: int(maxLine),
		maxPending: int(maxPending), writeTimeout: time.Duration(writeTimeout) * time.Millisecond,
		maxClients: int(maxClients), linger: time.Duration(lingerMs) * time.Millisecond,
		lingerBytes: int(lingerBytes),
	}
}

func printHelp(bind string, ints []intOption) {
	fmt.Printf("chatbench chat server, variant %s: a line-based chat relay (docs/protocol.md)\n", variant)
	fmt.Printf("Usage: %s [OPTIONS]\n\nOptions:\n", program)
	line := func(flag, help string) {
		if len(flag) > 28 {
			fmt.Printf("  %s\n  %-28s%s\n", flag, "", help)
		} else {
			fmt.Printf("  %-28s%s\n", flag, help)
		}
	}
	line("-h,--help", "Print this help message and exit")
	line("--bind TEXT:IPv4 or IPv6="+bind, "Address to listen on")
	for _, o := range ints {
		line(fmt.Sprintf("%s %s:%d..%d=%d", o.name, o.kind, o.min, o.max, *o.value), o.help)
	}
	fmt.Println("\nMore in docs/servers.md and docs/protocol.md; exit statuses in docs/exit-status.md.")
}
