package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// env is what a command needs from its process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// command is one subcommand: its one-line help and its function.
type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands is the table of subcommands; "entry create" is keyed "entry create".
var commands map[string]command

func init() {
	commands = map[string]command{
		"server":           {"run the authority daemon", runServer},
		"entry create":     {"register a workload; prints the entry id", runEntryCreate},
		"entry list":       {"list registration entries", runEntryList},
		"entry show":       {"show one registration entry", runEntryShow},
		"entry delete":     {"delete a registration entry", runEntryDelete},
		"revoke":           {"revoke an ID's certificates (--id, optionally --block) or one certificate (--serial)", runRevoke},
		"unblock":          {"let a blocked ID be issued SVIDs again", runUnblock},
		"revocations list": {"list the revocations in force", runRevocationsList},
		"client create":    {"register an OAuth client for the token endpoint; prints its secret once", runClientCreate},
		"client list":      {"list OAuth clients", runClientList},
		"client delete":    {"delete an OAuth client", runClientDelete},
		"svid fetch":       {"fetch this process's X.509-SVIDs from the Workload API", runSVIDFetch},
		"bundle show":      {"print the trust bundle", runBundleShow},
		"healthcheck":      {"exit 0 when the server answers on both sockets", runHealthcheck},
		"version":          {"print the version", runVersion},
	}
}

// usageError is a mistake in how a command was called: exit code 2.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return e.dispatch(ctx, args)
}

func (e *env) dispatch(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		e.usage()
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	name := args[0]
	rest := args[1:]
	cmd, ok := commands[name]
	if !ok && len(args) > 1 {
		name = args[0] + " " + args[1]
		rest = args[2:]
		cmd, ok = commands[name]
	}
	if !ok {
		fmt.Fprintf(e.stderr, "badge: unknown command %q\n", strings.Join(args[:min(2, len(args))], " "))
		e.usage()
		return exitUsage
	}
	err := cmd.run(ctx, e, rest)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.stderr, "badge %s: %v\n", name, err)
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "badge %s: %s\n", name, oneLine(err.Error()))
		return exitFailure
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func (e *env) usage() {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintln(e.stderr, "Usage: badge COMMAND [flags]\n\nCommands:")
	width := 0
	for _, n := range names {
		width = max(width, len(n))
	}
	for _, n := range names {
		fmt.Fprintf(e.stderr, "  %-*s  %s\n", width, n, commands[n].summary)
	}
	fmt.Fprintln(e.stderr, "\nRun badge COMMAND -h for the flags of a command.")
}
